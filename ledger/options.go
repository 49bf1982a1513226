package ledger

import (
	"fmt"
	"time"
)

// Durability sets when Append returns relative to fsync.
type Durability string

const (
	// DurabilityAlways fsyncs each group write of queued appends before any
	// append of the group returns, and before the next group is written.
	DurabilityAlways Durability = "always"
	// DurabilityBatch is group commit: concurrent appends share one fsync and
	// each returns only after an fsync that covers its entry.
	DurabilityBatch Durability = "batch"
	// DurabilityNone writes the entry to the operating system and returns
	// without fsync. A crash of the machine can lose acknowledged entries.
	DurabilityNone Durability = "none"
)

// ParseDurability parses a durability policy name. The empty string means DurabilityBatch.
func ParseDurability(s string) (Durability, error) {
	switch Durability(s) {
	case "":
		return DurabilityBatch, nil
	case DurabilityAlways, DurabilityBatch, DurabilityNone:
		return Durability(s), nil
	}
	return "", fmt.Errorf("invalid durability %q: use always, batch or none", s)
}

// KDFParams are the Argon2id cost parameters. MemoryKiB is in kibibytes.
type KDFParams struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKDF follows the second recommended Argon2id setting of RFC 9106
// (3 passes, 64 MiB), with 4 lanes.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// Bounds on KDF parameters accepted from callers and from header files, so a
// damaged header cannot make Open allocate without limit.
const (
	maxKDFTime      = 64
	maxKDFMemoryKiB = 4 * 1024 * 1024
)

func (p KDFParams) orDefault() KDFParams {
	if p == (KDFParams{}) {
		return DefaultKDF
	}
	return p
}

func (p KDFParams) validate() error {
	if p.Time < 1 || p.Time > maxKDFTime {
		return fmt.Errorf("invalid KDF time %d: use 1 to %d passes", p.Time, maxKDFTime)
	}
	if p.Threads < 1 {
		return fmt.Errorf("invalid KDF threads %d: use at least 1", p.Threads)
	}
	if p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxKDFMemoryKiB {
		return fmt.Errorf("invalid KDF memory %d KiB: use %d to %d KiB for %d threads", p.MemoryKiB, 8*uint32(p.Threads), maxKDFMemoryKiB, p.Threads)
	}
	return nil
}

// DefaultMaxClockSkew is used when Options.MaxClockSkew is zero.
const DefaultMaxClockSkew = 5 * time.Minute

// Options configure Create and Open.
type Options struct {
	Durability Durability
	// KDF sets the Argon2id cost for Create. The zero value means DefaultKDF.
	KDF KDFParams
	// Now is the clock for entry times. Nil means time.Now.
	Now func() time.Time
	// MaxClockSkew bounds how far in the future an imported entry's time may
	// be. Zero means DefaultMaxClockSkew.
	MaxClockSkew time.Duration
}

func (o Options) normalize() (Options, error) {
	d, err := ParseDurability(string(o.Durability))
	if err != nil {
		return o, err
	}
	o.Durability = d
	o.KDF = o.KDF.orDefault()
	if err := o.KDF.validate(); err != nil {
		return o, err
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxClockSkew < 0 {
		return o, fmt.Errorf("invalid max clock skew %s: use a positive duration", o.MaxClockSkew)
	}
	if o.MaxClockSkew == 0 {
		o.MaxClockSkew = DefaultMaxClockSkew
	}
	return o, nil
}
