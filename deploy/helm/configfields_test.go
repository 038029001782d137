package helm

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"strconv"
	"strings"
)

// configVariables returns the variable of every field of the worker's
// Config in config.go: NOTIFY_ and the field's envconfig tag.
func configVariables(path string) (map[string]bool, error) {
	file, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	vars := map[string]bool{}
	found := false
	ast.Inspect(file, func(n ast.Node) bool {
		spec, ok := n.(*ast.TypeSpec)
		if !ok || spec.Name.Name != "Config" {
			return true
		}
		st, ok := spec.Type.(*ast.StructType)
		if !ok {
			return false
		}
		found = true
		for _, f := range st.Fields.List {
			if f.Tag == nil {
				continue
			}
			tag, err := strconv.Unquote(f.Tag.Value)
			if err != nil {
				continue
			}
			if name := reflect.StructTag(tag).Get("envconfig"); name != "" {
				vars["NOTIFY_"+name] = true
			}
		}
		return false
	})
	if !found || len(vars) == 0 {
		return nil, fmt.Errorf("%s: no Config struct with envconfig tags", path)
	}
	return vars, nil
}

// unknownVariables returns the NOTIFY_* names among names that are not
// Config fields.
func unknownVariables(names []string, known map[string]bool) []string {
	var unknown []string
	for _, n := range names {
		if strings.HasPrefix(n, "NOTIFY_") && !known[n] {
			unknown = append(unknown, n)
		}
	}
	return unknown
}
