package starlib

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// MaxScriptSize bounds a script or module file: no consumer needs more,
// and a script path pointing at a huge file must not fill the memory.
const MaxScriptSize = 16 << 20

// StarExt is the extension of every file topix runs or loads. A file of
// another kind (a config file, a secret) is never compiled, so no error
// message can quote its content.
const StarExt = ".star"

// readStar reads a Starlark file: it must be named *.star, be a regular
// file (not a FIFO, which would block for ever, nor a device or a
// directory) and hold at most MaxScriptSize bytes. what names it in errors
// ("script", "module"). Every error is one line naming the path.
func readStar(what, path string) ([]byte, error) {
	if filepath.Ext(path) != StarExt {
		return nil, fmt.Errorf("%s %s: not a %s file; topix runs and loads Starlark files named *%s only", what, path, StarExt, StarExt)
	}
	// O_NONBLOCK: opening a FIFO without a writer returns at once instead
	// of waiting; the check below then refuses it.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%s %s: no such file", what, path)
		case errors.Is(err, fs.ErrPermission):
			return nil, fmt.Errorf("%s %s: permission denied; make it readable", what, path)
		}
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	switch mode := st.Mode(); {
	case mode.IsDir():
		return nil, fmt.Errorf("%s %s is a directory; give a .star file, like %s", what, path, filepath.Join(path, "app.star"))
	case !mode.IsRegular():
		return nil, fmt.Errorf("%s %s is not a regular file (%s); give a .star file", what, path, kind(mode))
	case st.Size() > MaxScriptSize:
		return nil, fmt.Errorf("%s %s holds %s; a Starlark file may hold at most %s", what, path, formatBytes(uint64(st.Size())), formatBytes(MaxScriptSize))
	}
	// The file may still grow while it is read: read one byte more than
	// allowed to notice.
	src, err := io.ReadAll(io.LimitReader(f, MaxScriptSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if len(src) > MaxScriptSize {
		return nil, fmt.Errorf("%s %s holds more than %s; a Starlark file may hold at most that", what, path, formatBytes(MaxScriptSize))
	}
	return src, nil
}

func kind(mode fs.FileMode) string {
	switch {
	case mode&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case mode&fs.ModeSocket != 0:
		return "a socket"
	case mode&fs.ModeDevice != 0:
		return "a device"
	}
	return mode.Type().String()
}
