package fsblob

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"github.com/agentd/agentd"
)

// An object file is
//
//	"AGB1" | n, a big-endian uint32 | n bytes of JSON header | body
//
// The JSON header may be followed by spaces up to n bytes: Put reserves the
// header's space before it streams the body, and writes the header once the
// size and etag are known. JSON ignores trailing whitespace, and the header
// of the largest values is never longer than the space reserved (see
// reservedHeaderSize). The magic names the format's version.
const (
	magic      = "AGB1"
	prefixSize = len(magic) + 4

	// maxHeaderSize bounds what a (corrupt) length field can make us
	// allocate. A real header is at most a few tens of KiB: a 1 KiB key and
	// 2 KiB of metadata, each byte escaped to six at worst.
	maxHeaderSize = 1 << 20
)

// header is the JSON at the start of an object file. It is its own type,
// not agentd.BlobObject, so the file format does not change when the API
// type does.
type header struct {
	Key            string            `json:"key"`
	Size           int64             `json:"size"`
	ETag           string            `json:"etag"`
	ContentType    string            `json:"contentType,omitempty"`
	CustomMetadata map[string]string `json:"customMetadata,omitempty"`
	Uploaded       time.Time         `json:"uploaded"`
}

func (h header) object() agentd.BlobObject {
	return agentd.BlobObject{
		Key:            h.Key,
		Size:           h.Size,
		ETag:           h.ETag,
		ContentType:    h.ContentType,
		CustomMetadata: h.CustomMetadata,
		Uploaded:       h.Uploaded,
	}
}

// reservedHeaderSize is the space to reserve for h's header before its
// size, etag and upload time are known: the length of the header with the
// longest values those fields can take. The key, content type and metadata
// are already final.
func reservedHeaderSize(h header) (int, error) {
	h.Size = math.MaxInt64
	h.ETag = strings.Repeat("0", 2*16) // hex MD5
	h.Uploaded = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	b, err := json.Marshal(h)
	return len(b), err
}

// encodeHeader returns the magic, length and JSON of h, padded with spaces
// to fill size bytes of JSON.
func encodeHeader(h header, size int) ([]byte, error) {
	js, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encoding the object header: %w", err)
	}
	if len(js) > size {
		return nil, fmt.Errorf("object header of %d bytes outgrew the %d reserved for it", len(js), size)
	}
	b := make([]byte, prefixSize+size)
	copy(b, magic)
	binary.BigEndian.PutUint32(b[len(magic):], uint32(size))
	n := copy(b[prefixSize:], js)
	for i := prefixSize + n; i < len(b); i++ {
		b[i] = ' '
	}
	return b, nil
}

// readHeader reads the header of the object file f at path and returns it
// with the offset of the body. It checks that the file is as long as the
// header says, so a torn or truncated file is reported, not half-read.
func readHeader(op, path string, f *os.File) (header, int64, error) {
	info, err := f.Stat()
	if err != nil {
		return header{}, 0, storageErr(op, err)
	}
	var prefix [prefixSize]byte
	if _, err := f.ReadAt(prefix[:], 0); err != nil {
		if errors.Is(err, io.EOF) {
			return header{}, 0, corrupt(op, path, "%d bytes, shorter than a header", info.Size())
		}
		return header{}, 0, storageErr(op, err)
	}
	if string(prefix[:len(magic)]) != magic {
		return header{}, 0, corrupt(op, path, "it does not start with %q", magic)
	}
	n := int64(binary.BigEndian.Uint32(prefix[len(magic):]))
	if n > maxHeaderSize || int64(prefixSize)+n > info.Size() {
		return header{}, 0, corrupt(op, path, "header length %d does not fit a %d-byte file", n, info.Size())
	}
	js := make([]byte, n)
	if _, err := f.ReadAt(js, int64(prefixSize)); err != nil {
		return header{}, 0, storageErr(op, err)
	}
	var h header
	if err := json.Unmarshal(js, &h); err != nil {
		return header{}, 0, corrupt(op, path, "header: %v", err)
	}
	start := int64(prefixSize) + n
	switch {
	case agentd.ValidateBlobKey(h.Key) != nil:
		return header{}, 0, corrupt(op, path, "header holds no valid key")
	case h.Size < 0 || h.Size != info.Size()-start:
		return header{}, 0, corrupt(op, path, "header says %d body bytes, the file holds %d", h.Size, info.Size()-start)
	}
	return h, start, nil
}
