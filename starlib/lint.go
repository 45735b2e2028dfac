package starlib

import (
	"fmt"

	"go.starlark.net/syntax"
)

// selfCalls returns a warning for each function of f that calls itself by
// name in its own body. Starlark (as topix runs it) has no recursion: such a
// call fails at run time with "called recursively", which a step budget
// alone could not prevent from exhausting the Go stack. Calls through
// another function are not found; the interpreter stops those too.
func selfCalls(f *syntax.File) []string {
	var warnings []string
	syntax.Walk(f, func(n syntax.Node) bool {
		switch n := n.(type) {
		case *syntax.DefStmt:
			for _, s := range n.Body {
				syntax.Walk(s, func(m syntax.Node) bool {
					if d, ok := m.(*syntax.DefStmt); ok && d != n {
						return false // its own body is walked by the outer walk
					}
					call, ok := m.(*syntax.CallExpr)
					if !ok {
						return true
					}
					if id, ok := call.Fn.(*syntax.Ident); ok && id.Name == n.Name.Name {
						warnings = append(warnings, fmt.Sprintf("%s: %s calls itself; Starlark has no recursion, so this call fails when it runs (use a loop)",
							id.NamePos, n.Name.Name))
					}
					return true
				})
			}
		}
		return true
	})
	return warnings
}
