// Package node implements one ThingDB node on top of the ledger. It serves
// the /v1 HTTPS API with scoped bearer tokens and TLS files reloaded on
// change. It checks imports against the keys pinned in the peer file, runs
// the sync loop that pulls from those peers, exports Prometheus metrics,
// and contains the thingdb command line with its demos.
//
// Tokens are stored as SHA-256 hashes in a directory of JSON records and
// compared in constant time. Import takes a batch signed by the sending
// node's Ed25519 key (domain "thingdb/batch/v1"), checks the signature
// against the key pinned for that node, then lets the ledger check and
// apply every entry or none. The sync loop (Syncer) does the same with
// what it pulls: it checks each peer's identity, signed heads and batches
// against the pinned key before the ledger checks the entries. It never
// pushes. docs/architecture.md documents the flags, endpoints, statuses
// and wire formats.
package node
