package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/alecthomas/kong"
	"gopkg.in/yaml.v3"
)

// yamlConfig is a kong configuration loader for YAML files: every flag can
// be set by its long name ("http-addr: 0.0.0.0:8080"), also written in
// snake_case, or nested by dots ("mqtt: {addr: ...}" for mqtt-addr is not
// supported; "serve: {http-addr: ...}" is, for a command's own flags).
// Precedence: command line, then TELEGAUGE_* variables, then the file, then
// defaults.
func yamlConfig(r io.Reader) (kong.Resolver, error) {
	values := map[string]any{}
	if err := yaml.NewDecoder(r).Decode(&values); err != nil && err != io.EOF {
		return nil, fmt.Errorf("parse config file: %w", err)
	}
	var f kong.ResolverFunc = func(_ *kong.Context, parent *kong.Path, flag *kong.Flag) (any, error) {
		// kong consults configuration before the environment; step aside
		// for a flag whose variable is set, so that TELEGAUGE_* overrides
		// a file baked into an image, as operators expect.
		for _, env := range flag.Envs {
			if _, set := os.LookupEnv(env); set {
				return nil, nil
			}
		}
		if v, ok := lookup(values, flag.Name); ok {
			return v, nil
		}
		// A command's flags may also sit under the command's name.
		if parent != nil && parent.Command != nil {
			if sect, ok := values[parent.Command.Name].(map[string]any); ok {
				if v, ok := lookup(sect, flag.Name); ok {
					return v, nil
				}
			}
		}
		return nil, nil
	}
	return f, nil
}

func lookup(values map[string]any, name string) (any, bool) {
	for _, k := range []string{name, strings.ReplaceAll(name, "-", "_")} {
		if v, ok := values[k]; ok {
			if list, isList := v.([]any); isList {
				// kong takes lists as comma-separated strings.
				parts := make([]string, len(list))
				for i, x := range list {
					parts[i] = fmt.Sprint(x)
				}
				return strings.Join(parts, ","), true
			}
			return v, true
		}
	}
	return nil, false
}
