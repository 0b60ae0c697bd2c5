package bolt

import (
	"encoding/binary"
	"math"
	"time"
)

// headerSize is the fixed part of a stored record: version (uint64),
// expiration in Unix nanoseconds or 0 for none (int64), metadata length
// (uint32), all big-endian. Metadata and then the value follow it, so List can
// read expiration and metadata from the memory-mapped page without touching
// (or copying) a value of up to 25 MiB.
const headerSize = 8 + 8 + 4

// header is the decoded fixed part of a record.
type header struct {
	version    uint64
	expiration int64 // Unix nanoseconds; 0: never expires
	metaLen    uint32
}

// representable reports whether t fits the record's int64 Unix-nanosecond
// expiration (up to the year 2262); beyond it UnixNano would wrap.
func representable(t time.Time) bool {
	return !t.After(time.Unix(0, math.MaxInt64))
}

// encodeRecord builds the stored form of an entry in one fresh allocation, so
// the slice handed to bolt is owned by the transaction and not by the caller.
func encodeRecord(version uint64, expiration time.Time, meta, value []byte) []byte {
	buf := make([]byte, headerSize+len(meta)+len(value))
	setVersion(buf, version)
	var exp int64
	if !expiration.IsZero() {
		exp = expiration.UnixNano()
	}
	binary.BigEndian.PutUint64(buf[8:16], uint64(exp))
	binary.BigEndian.PutUint32(buf[16:20], uint32(len(meta)))
	copy(buf[headerSize:], meta)
	copy(buf[headerSize+len(meta):], value)
	return buf
}

// setVersion writes the version into an encoded record, which is built before
// the transaction that picks the version.
func setVersion(rec []byte, version uint64) {
	binary.BigEndian.PutUint64(rec[0:8], version)
}

// decodeHeader reads the fixed part of a record and checks that the metadata
// it announces fits. It fails only on a record this package did not write
// (a damaged or foreign file).
func decodeHeader(rec []byte) (header, bool) {
	if len(rec) < headerSize {
		return header{}, false
	}
	h := header{
		version:    binary.BigEndian.Uint64(rec[0:8]),
		expiration: int64(binary.BigEndian.Uint64(rec[8:16])),
		metaLen:    binary.BigEndian.Uint32(rec[16:20]),
	}
	if uint64(len(rec)-headerSize) < uint64(h.metaLen) {
		return header{}, false
	}
	return h, true
}

// expirationTime is the record's expiration as a time, zero when it never
// expires. It is in UTC so the same record reads the same on every machine.
func (h header) expirationTime() time.Time {
	if h.expiration == 0 {
		return time.Time{}
	}
	return time.Unix(0, h.expiration).UTC()
}

// metadata returns a copy of the record's metadata, nil when none was stored
// (stored metadata is valid JSON, so it is never empty).
func (h header) metadata(rec []byte) []byte {
	if h.metaLen == 0 {
		return nil
	}
	return clone(rec[headerSize : headerSize+int(h.metaLen)])
}

// value returns a copy of the record's value, never nil, so an empty value
// reads as empty rather than absent.
func (h header) value(rec []byte) []byte {
	v := rec[headerSize+int(h.metaLen):]
	out := make([]byte, len(v))
	copy(out, v)
	return out
}

// clone copies b out of a bolt page: bolt slices die with their transaction.
func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	out := make([]byte, len(b))
	copy(out, b)
	return out
}
