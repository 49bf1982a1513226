package node

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/thingdb/thingdb/ledger"
)

// IdentityResponse is the body of GET /v1/identity. Keys are base64.
type IdentityResponse struct {
	NodeID       string `json:"nodeID"`
	KeyID        string `json:"keyID"`
	SigningKey   string `json:"signingKey"`
	RecipientKey string `json:"recipientKey"`
}

func identityResponse(id ledger.Identity) IdentityResponse {
	return IdentityResponse{
		NodeID:       id.NodeID,
		KeyID:        id.KeyID,
		SigningKey:   base64.StdEncoding.EncodeToString(id.SigningKey),
		RecipientKey: base64.StdEncoding.EncodeToString(id.RecipientKey),
	}
}

func (s *Server) handleIdentity(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, identityResponse(s.ledger.Identity()))
}

// PutRequest is the body of PUT /v1/things/{id}.
type PutRequest struct {
	// Data is the new state of the thing: any JSON value.
	Data json.RawMessage `json:"data"`
	// Recipients are node ids from the peer file whose recipient keys the
	// entry's content key is also sealed to (envelope mode). Without the
	// field, a node with sealing to peers on uses every peer that has a
	// recipient key; an empty list means none.
	Recipients []string `json:"recipients,omitempty"`
}

// EntryInfoJSON is the body of a successful put: where the entry landed.
type EntryInfoJSON struct {
	Origin   string    `json:"origin"`
	Sequence uint64    `json:"sequence"`
	Hash     string    `json:"hash"`
	Time     time.Time `json:"time"`
	KeyID    string    `json:"keyID"`
}

func entryInfoJSON(info ledger.EntryInfo) EntryInfoJSON {
	return EntryInfoJSON{Origin: info.Origin, Sequence: info.Sequence, Hash: info.Hash, Time: info.Time, KeyID: info.KeyID}
}

func (s *Server) handlePutThing(w http.ResponseWriter, r *http.Request, token TokenRecord) {
	thing := r.PathValue("id")
	if err := checkThingID(thing); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_thing", err.Error())
		return
	}
	var req PutRequest
	if !readBody(w, r, s.limits.MaxBodyBytes, &req) {
		return
	}
	if len(req.Data) == 0 {
		writeError(w, http.StatusBadRequest, "malformed", "field \"data\" is missing: send {\"data\": <any JSON value>}")
		return
	}
	// readBody's decoder has checked that req.Data is valid JSON.
	if len(req.Data) > ledger.MaxDataSize {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("data has %d bytes, the limit of one entry is %d", len(req.Data), ledger.MaxDataSize))
		return
	}
	nodeIDs := req.Recipients
	if nodeIDs == nil && (s.seal || s.pins.File().SealToPeers) {
		nodeIDs = s.peersWithRecipientKey()
	}
	recipients, err := s.resolveRecipients(nodeIDs)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "unknown_recipient", err.Error())
		return
	}
	info, err := s.ledger.Append(r.Context(), ledger.AppendRequest{
		Thing:      thing,
		Actor:      token.Name,
		Data:       req.Data,
		Recipients: recipients,
	})
	if err != nil {
		s.writeLedgerError(w, r, "append entry", err)
		return
	}
	s.metrics.appends.Inc()
	writeJSON(w, http.StatusOK, entryInfoJSON(info))
}

// peersWithRecipientKey returns the node ids of the peers that envelope
// mode can seal to.
func (s *Server) peersWithRecipientKey() []string {
	var ids []string
	for _, peer := range s.pins.File().Peers {
		if len(peer.RecipientKey) > 0 {
			ids = append(ids, peer.NodeID)
		}
	}
	return ids
}

func (s *Server) resolveRecipients(nodeIDs []string) ([]ledger.Recipient, error) {
	if len(nodeIDs) > ledger.MaxRecipients {
		return nil, fmt.Errorf("%d recipients, the limit is %d", len(nodeIDs), ledger.MaxRecipients)
	}
	var recipients []ledger.Recipient
	for _, id := range nodeIDs {
		peer, ok := s.pins.Lookup(id)
		if !ok {
			return nil, fmt.Errorf("recipient %q is not a peer in the peer file: add it there first", id)
		}
		if len(peer.RecipientKey) == 0 {
			return nil, fmt.Errorf("peer %q has no recipientKey in the peer file: add its X25519 key from GET /v1/identity", peer.Name)
		}
		recipients = append(recipients, ledger.Recipient{NodeID: peer.NodeID, PublicKey: peer.RecipientKey})
	}
	return recipients, nil
}

// checkThingID applies the ledger's rules for ids, so that a bad id is a
// client error (400) and not a failed append.
func checkThingID(id string) error {
	if id == "" || len(id) > ledger.MaxIDLen || !utf8.ValidString(id) || strings.ContainsFunc(id, isControl) {
		return fmt.Errorf("invalid thing id %q: use 1 to %d bytes of UTF-8 without control characters", id, ledger.MaxIDLen)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// VersionJSON is one version of a thing with its provenance.
type VersionJSON struct {
	Thing          string          `json:"thing"`
	Origin         string          `json:"origin"`
	Sequence       uint64          `json:"sequence"`
	Hash           string          `json:"hash"`
	Time           time.Time       `json:"time"`
	Actor          string          `json:"actor"`
	ActorKey       string          `json:"actorKey"`
	KeyID          string          `json:"keyID"`
	SignatureValid bool            `json:"signatureValid"`
	Readable       bool            `json:"readable"`
	Data           json.RawMessage `json:"data,omitempty"`
}

func versionJSON(v ledger.Version) VersionJSON {
	return VersionJSON{
		Thing:          v.Thing,
		Origin:         v.Origin,
		Sequence:       v.Sequence,
		Hash:           v.Hash,
		Time:           v.Time,
		Actor:          v.Actor,
		ActorKey:       base64.StdEncoding.EncodeToString(v.ActorKey),
		KeyID:          v.KeyID,
		SignatureValid: v.SignatureValid,
		Readable:       v.Readable,
		Data:           v.Data,
	}
}

func (s *Server) handleGetThing(w http.ResponseWriter, r *http.Request) {
	thing := r.PathValue("id")
	v, err := latestVersion(s.ledger, thing)
	if err != nil {
		s.writeLedgerError(w, r, "get thing", err)
		return
	}
	writeJSON(w, http.StatusOK, versionJSON(v))
}

// latestVersion returns the latest version of thing. When this node holds no
// key for it, the version comes back with its provenance and no data rather
// than as an error.
func latestVersion(l *ledger.Ledger, thing string) (ledger.Version, error) {
	v, err := l.Get(thing)
	if errors.Is(err, ledger.ErrNotReadable) {
		return v, nil
	}
	return v, err
}

// HistoryResponse is the body of GET /v1/things/{id}/history, oldest first.
type HistoryResponse struct {
	Thing    string        `json:"thing"`
	Versions []VersionJSON `json:"versions"`
}

func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request) {
	thing := r.PathValue("id")
	history, err := s.ledger.History(thing)
	if err != nil {
		s.writeLedgerError(w, r, "read history", err)
		return
	}
	resp := HistoryResponse{Thing: thing, Versions: make([]VersionJSON, len(history))}
	for i, v := range history {
		resp.Versions[i] = versionJSON(v)
	}
	writeJSON(w, http.StatusOK, resp)
}

// writeLedgerError maps a ledger error to a status. Errors the client cannot
// cause are logged and returned as 500 without detail.
func (s *Server) writeLedgerError(w http.ResponseWriter, r *http.Request, action string, err error) {
	switch {
	case errors.Is(err, ledger.ErrThingNotFound):
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("thing %q not found", r.PathValue("id")))
	case errors.Is(err, ledger.ErrNotReadable):
		writeError(w, http.StatusNotFound, "not_readable", fmt.Sprintf("thing %q has no version this node can decrypt", r.PathValue("id")))
	case errors.Is(err, ledger.ErrClosed), errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the node is shutting down; retry on another node or later")
	default:
		s.logger.Error("request failed", "action", action, "route", r.URL.Path, "error", err)
		writeError(w, http.StatusInternalServerError, "internal", action+" failed; the node log has the cause")
	}
}
