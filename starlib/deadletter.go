package starlib

import (
	"go.starlark.net/starlark"

	"github.com/topix-dev/topix/engine"
)

// dead_letter gives up on the entry at once, without retries:
//
//	dead_letter(reason)
//
// It ends the call like fail(reason) does, and the entry's emits are
// dropped, but instead of staying pending for another attempt the entry
// goes straight to the consumer's dead-letter stream (--dead-letter,
// default STREAM:dead) with reason as its error, and is then acked. Use it
// for entries that no retry can fix: malformed input, an unknown customer.
// `topix replay` puts dead-lettered entries back on their stream.
var deadLetterBuiltin = starlark.NewBuiltin("dead_letter", deadLetter)

func deadLetter(thread *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var reason string
	if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 1, &reason); err != nil {
		return nil, err
	}
	return nil, &rejection{reason: reason}
}

// rejection is the error of dead_letter(): its message is the reason, and
// it is an engine.ErrDeadLetter.
type rejection struct{ reason string }

func (r *rejection) Error() string { return r.reason }
func (r *rejection) Unwrap() error { return engine.ErrDeadLetter }
