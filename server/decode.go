package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/agentd/agentd"
)

// decodeJSON reads one JSON object from the request body into dst. A body
// whose declared length is over limit is refused before reading it; one
// that turns out longer is cut off at limit. Unknown fields, trailing data
// and wrong types are errors that name what is wrong.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, dst any) error {
	const op = "decode"
	if r.ContentLength > limit {
		return tooLarge(limit)
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err, limit)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge(limit)
		}
		return agentd.Errorf(agentd.KindInvalid, op, "request body must hold exactly one JSON object")
	}
	return nil
}

// errEmptyBody is decodeJSON's error for a body with nothing in it, which
// some endpoints accept.
var errEmptyBody = agentd.Errorf(agentd.KindInvalid, "decode", "request body is empty; send a JSON object")

func tooLarge(limit int64) error {
	return agentd.Errorf(agentd.KindTooLarge, "decode", "request body is larger than %d bytes", limit)
}

func decodeError(err error, limit int64) error {
	const op = "decode"
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
		mbe    *http.MaxBytesError
	)
	switch {
	case errors.As(err, &mbe):
		return tooLarge(limit)
	case errors.Is(err, io.EOF):
		return errEmptyBody
	case errors.Is(err, io.ErrUnexpectedEOF):
		return agentd.Errorf(agentd.KindInvalid, op, "request body is not valid JSON: it ends too early")
	case errors.As(err, &syntax):
		return agentd.Errorf(agentd.KindInvalid, op, "request body is not valid JSON at byte %d: %v", syntax.Offset, syntax)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return agentd.Errorf(agentd.KindInvalid, op, "request body must be a JSON object, not %s", typ.Value)
		}
		return agentd.InvalidField(op, typ.Field, "field %s must be %s, not %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return agentd.InvalidField(op, field, "unknown field %q", field)
	}
	return agentd.Errorf(agentd.KindInvalid, op, "request body is not valid: %v", err)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "int", "int64", "float64":
		return "a number"
	case "bool":
		return "a boolean"
	case "struct", "map":
		return "an object"
	case "slice":
		return "an array"
	}
	return fmt.Sprintf("a %s", goKind)
}
