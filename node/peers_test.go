package node

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thingdb/thingdb/ledger"
)

func TestParsePeerFile(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	key := base64.StdEncoding.EncodeToString(pub)
	id := ledger.NodeID(pub)
	recipient := base64.StdEncoding.EncodeToString(make([]byte, 32))
	peer := func(fields string) string {
		return `{"peers":[{"name":"b","url":"https://b:8443","nodeID":"` + id + `","signingKey":"` + key + `"` + fields + `}]}`
	}

	tests := map[string]struct {
		data    string
		wantErr string
	}{
		"minimal":            {data: peer("")},
		"full":               {data: `{"interval":"10s","batchSize":5,` + peer(`,"recipientKey":"` + recipient + `","caFile":"b/ca.crt","tokenFile":"b/token"`)[1:]},
		"unknown field":      {data: peer(`,"colour":"red"`), wantErr: "unknown field"},
		"node id mismatch":   {data: strings.Replace(peer(""), id, strings.Repeat("0", 32), 1), wantErr: "does not match signingKey"},
		"short key":          {data: strings.Replace(peer(""), key, "AAAA", 1), wantErr: "invalid signingKey"},
		"bad url":            {data: strings.Replace(peer(""), "https://b:8443", "b:8443", 1), wantErr: "invalid url"},
		"bad interval":       {data: `{"interval":"soon","peers":[]}`, wantErr: "invalid peer file interval"},
		"negative batchSize": {data: `{"batchSize":-1,"peers":[]}`, wantErr: "invalid peer file batchSize"},
		"bad recipient key":  {data: peer(`,"recipientKey":"AAAA"`), wantErr: "invalid recipientKey"},
		"duplicate name":     {data: `{"peers":[` + peer("")[10:len(peer(""))-2] + `,` + peer("")[10:len(peer(""))-2] + `]}`, wantErr: "appears twice"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			pf, err := ParsePeerFile([]byte(tt.data), "/etc/thingdb")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePeerFile: %v", err)
			}
			if len(pf.Peers) != 1 || pf.Peers[0].NodeID != id || !pf.Peers[0].SigningKey.Equal(pub) {
				t.Fatalf("peers = %+v", pf.Peers)
			}
			if pf.Peers[0].CAFile != "" && pf.Peers[0].CAFile != filepath.Join("/etc/thingdb", "b/ca.crt") {
				t.Fatalf("caFile = %q, want it resolved against the peer file's directory", pf.Peers[0].CAFile)
			}
		})
	}
}

func TestBatch_SignatureCoversEveryField(t *testing.T) {
	l, _ := newTestLedger(t, ledger.DurabilityNone)
	lines := appendThings(t, l, "x", 3)
	id := l.Identity()
	batch := SignBatch(l, id.NodeID, lines)
	if !batch.Verify(id.SigningKey) {
		t.Fatal("fresh batch does not verify")
	}

	tests := map[string]func(b *Batch){
		"other sender":     func(b *Batch) { b.Node = strings.Repeat("1", 32) },
		"line dropped":     func(b *Batch) { b.Lines = b.Lines[1:] },
		"lines swapped":    func(b *Batch) { b.Lines[0], b.Lines[1] = b.Lines[1], b.Lines[0] },
		"line changed":     func(b *Batch) { b.Lines[2] = b.Lines[2][:len(b.Lines[2])-1] + " " },
		"lines merged":     func(b *Batch) { b.Lines = []string{b.Lines[0] + b.Lines[1], b.Lines[2]} },
		"signature zeroed": func(b *Batch) { b.Signature = make([]byte, len(b.Signature)) },
	}
	for name, change := range tests {
		t.Run(name, func(t *testing.T) {
			b := SignBatch(l, id.NodeID, lines)
			change(&b)
			if b.Verify(id.SigningKey) {
				t.Fatal("changed batch still verifies")
			}
		})
	}
}
