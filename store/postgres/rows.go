package postgres

import (
	"database/sql/driver"
	"encoding/hex"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/agentd/agentd"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// readRows reads a whole result into agentd.Rows, normalizing values to the
// types the SQLite backend gives, so code reading Rows works on both:
//
//   - smallint, integer, bigint (and oid-like integers) → int64
//   - real, double precision → float64 (a real is converted through its
//     shortest decimal form, so 1.1 stays 1.1)
//   - numeric → string, exactly as Postgres prints it ("12.50", "NaN"): a
//     float64 would lose digits of money and other decimals. Cast in SQL
//     (::double precision, ::bigint) to get a number; note SUM(bigint) and
//     AVG are numeric.
//   - text, varchar, char, name, enum → string; bytea → []byte (empty, not
//     nil, for an empty value); bool → bool
//   - timestamptz, timestamp, date → time.Time in UTC
//   - uuid → string in the canonical 8-4-4-4-12 form
//   - json, jsonb → the JSON text as a string, as SQLite keeps JSON: decode it
//     where it is used
//   - arrays → []any of normalized elements
//   - NULL → nil
//   - anything else → its text form where pgx gives one (interval, inet,
//     point, …), or the value pgx decodes
func readRows(rows pgx.Rows) (*agentd.Rows, error) {
	defer rows.Close()
	fds := rows.FieldDescriptions()
	cols := make([]string, len(fds))
	isJSON := make([]bool, len(fds))
	for i, fd := range fds {
		cols[i] = fd.Name
		isJSON[i] = fd.DataTypeOID == pgtype.JSONOID || fd.DataTypeOID == pgtype.JSONBOID
	}
	// Values is never nil, so an empty result encodes as [] rather than
	// null.
	out := &agentd.Rows{Columns: cols, Values: [][]any{}}
	dest := make([]any, len(fds))
	jsonBufs := make([][]byte, len(fds))
	for rows.Next() {
		row := make([]any, len(fds))
		for i := range row {
			if isJSON[i] {
				// Scanning JSON into []byte keeps its text instead of
				// decoding it.
				dest[i] = &jsonBufs[i]
			} else {
				dest[i] = &row[i]
			}
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		for i, v := range row {
			if isJSON[i] {
				if jsonBufs[i] == nil {
					row[i] = nil
				} else {
					row[i] = string(jsonBufs[i])
				}
				jsonBufs[i] = nil
				continue
			}
			row[i] = normalize(v, 0)
		}
		out.Values = append(out.Values, row)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// normalize converts a value pgx decoded to one of the types Rows holds.
func normalize(v any, depth int) any {
	switch x := v.(type) {
	case nil, int64, float64, string, bool:
		return x
	case []byte:
		if x == nil {
			return []byte{}
		}
		return x
	case int32:
		return int64(x)
	case int16:
		return int64(x)
	case int8:
		return int64(x)
	case int:
		return int64(x)
	case uint32: // oid, xid
		return int64(x)
	case float32:
		f, err := strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
		if err != nil {
			return float64(x)
		}
		return f
	case time.Time:
		return x.UTC()
	case [16]byte:
		return formatUUID(x)
	case []any:
		if depth >= maxArgDepth {
			return x
		}
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e, depth+1)
		}
		return out
	case driver.Valuer:
		// pgtype.Numeric, Interval, Point, … give their text form.
		if depth >= maxArgDepth {
			return x
		}
		dv, err := safeValue(x)
		if err != nil {
			return x
		}
		return normalize(dv, depth+1)
	case fmt.Stringer:
		// netip.Prefix, net.HardwareAddr, …
		return x.String()
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return int64(rv.Uint())
	case reflect.Float32, reflect.Float64:
		return rv.Float()
	case reflect.String:
		return rv.String()
	}
	return v
}

func formatUUID(u [16]byte) string {
	var buf [36]byte
	hex.Encode(buf[0:8], u[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], u[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], u[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], u[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:], u[10:])
	return string(buf[:])
}
