// Package staticfiles holds the embedded files of a page (the demo page,
// the admin page): each read once at start, served with its content type
// and an ETag of its content, so a browser revalidates cheaply.
package staticfiles

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"time"
)

// File is one response body served as it is.
type File struct {
	body        []byte
	contentType string
	etag        string
}

// New returns body as a File of the given content type.
func New(body []byte, contentType string) File {
	sum := sha256.Sum256(body)
	return File{body: body, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

// Serve writes f, or 304 to a request that already has it.
func (f File) Serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("ETag", f.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// Load reads the files of dir in fsys whose extension types gives a
// content type (others are not served), by name; "" names index.html,
// which must be there.
func Load(fsys fs.FS, dir string, types map[string]string) (map[string]File, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read embedded files: %w", err)
	}
	files := make(map[string]File, len(entries)+1)
	for _, e := range entries {
		typ, ok := types[path.Ext(e.Name())]
		if e.IsDir() || !ok {
			continue
		}
		body, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", e.Name(), err)
		}
		files[e.Name()] = New(body, typ)
	}
	index, ok := files["index.html"]
	if !ok {
		return nil, errors.New("no index.html embedded")
	}
	files[""] = index
	return files, nil
}
