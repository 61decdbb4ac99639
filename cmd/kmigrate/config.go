package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The proxy's settings come from one table, its flag set: a flag's name is
// also its YAML key (kebab-case) and, upper-cased with "-" as "_" behind
// envPrefix, its environment variable. A value given on the command line wins
// over the environment, which wins over the file, which wins over the
// default. Keeping a single table means a new flag is configurable
// everywhere with no further code.

const envPrefix = "KMIGRATE_"

// Flags that only make sense on the command line: the file cannot name
// itself, and printing the configuration is an action, not a setting.
var (
	notInFile = map[string]bool{"config": true, "print-config": true}
	notInEnv  = map[string]bool{"print-config": true}
)

// envName is the environment variable of a flag: "source-bootstrap" →
// "KMIGRATE_SOURCE_BOOTSTRAP".
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// isSecret says whether a setting's value must never be printed. A file
// or an endpoint only says where a secret is (--source-oauth-token-file).
func isSecret(flagName string) bool {
	if strings.HasSuffix(flagName, "-file") || strings.HasSuffix(flagName, "-endpoint") {
		return false
	}
	for _, word := range []string{"password", "secret", "token"} {
		if strings.Contains(flagName, word) {
			return true
		}
	}
	return false
}

// configOrigins records where each setting not left at its default came
// from: "flag", "env KMIGRATE_…" or "FILE:LINE".
type configOrigins map[string]string

// loadConfig parses args into fs, then fills every flag the command line did
// not set from the environment and then from the YAML file named by
// --config (or KMIGRATE_CONFIG). warnings are worth logging but not fatal
// (an environment variable that looks like a misspelt setting).
func loadConfig(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool), environ []string) (origins configOrigins, warnings []string, err error) {
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q: settings are flags (--name value)", fs.Arg(0))
	}
	origins = configOrigins{}
	fs.Visit(func(f *flag.Flag) { origins[f.Name] = "flag" })

	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if origins[f.Name] != "" || notInEnv[f.Name] {
			return
		}
		name := envName(f.Name)
		value, ok := lookupEnv(name)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, value); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %s", name, badValue(f, value)))
			return
		}
		origins[f.Name] = "env " + name
	})
	warnings = misspeltEnv(fs, environ)

	if path := fs.Lookup("config").Value.String(); path != "" {
		if err := applyConfigFile(fs, path, origins); err != nil {
			errs = append(errs, err)
		}
	}
	return origins, warnings, errors.Join(errs...)
}

// applyConfigFile sets, from the YAML file at path, every flag not already
// set by the command line or the environment.
func applyConfigFile(fs *flag.FlagSet, path string, origins configOrigins) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	settings, err := parseConfigYAML(data)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	var errs []error
	seen := map[string]int{}
	for _, s := range settings {
		where := fmt.Sprintf("config %s line %d", path, s.line)
		f := fs.Lookup(s.key)
		switch {
		case notInFile[s.key]:
			errs = append(errs, fmt.Errorf("%s: %q can only be given on the command line (--%s)", where, s.key, s.key))
			continue
		case f == nil:
			errs = append(errs, fmt.Errorf("%s: unknown key %q%s", where, s.key, suggestKey(fs, s.key)))
			continue
		case seen[s.key] != 0:
			errs = append(errs, fmt.Errorf("%s: %q is already set at line %d; keep one", where, s.key, seen[s.key]))
			continue
		}
		seen[s.key] = s.line
		if origins[s.key] != "" {
			continue // the command line or the environment wins
		}
		if err := fs.Set(s.key, s.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s", where, badValue(f, s.value)))
			continue
		}
		origins[s.key] = fmt.Sprintf("%s:%d", path, s.line)
	}
	return errors.Join(errs...)
}

// configSetting is one key of the file, flattened to a flag name.
type configSetting struct {
	key, value string
	line       int
}

// parseConfigYAML reads a mapping of flag names to values. Nested mappings
// join their keys with "-" (source: {bootstrap: …} is source-bootstrap), and
// a list becomes a comma-separated value (bootstrap servers, topics).
func parseConfigYAML(data []byte) ([]configSetting, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Kind == 0 {
		return nil, nil // an empty file sets nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: expected a mapping of settings (key: value), one per line", root.Line)
	}
	var out []configSetting
	var walk func(prefix string, m *yaml.Node) error
	walk = func(prefix string, m *yaml.Node) error {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			key := prefix + k.Value
			switch v.Kind {
			case yaml.ScalarNode:
				value := v.Value
				if v.Tag == "!!null" {
					value = ""
				}
				out = append(out, configSetting{key, value, k.Line})
			case yaml.SequenceNode:
				items := make([]string, 0, len(v.Content))
				for _, item := range v.Content {
					if item.Kind != yaml.ScalarNode {
						return fmt.Errorf("line %d: %q: list items must be plain values", item.Line, key)
					}
					items = append(items, item.Value)
				}
				out = append(out, configSetting{key, strings.Join(items, ","), k.Line})
			case yaml.MappingNode:
				if err := walk(key+"-", v); err != nil {
					return err
				}
			default:
				return fmt.Errorf("line %d: %q: unsupported value (aliases are not supported)", k.Line, key)
			}
		}
		return nil
	}
	return out, walk("", root)
}

// badValue explains a value a flag refused: the key and what it expects.
func badValue(f *flag.Flag, value string) string {
	expected := "a valid value"
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case bool:
			expected = "true or false"
		case int, int64, uint, uint64:
			expected = "an integer"
		case float64:
			expected = "a number"
		case time.Duration:
			expected = "a duration such as 500ms, 30s or 5m"
		}
	}
	return fmt.Sprintf("%s: %q is not valid, expected %s (%s)", f.Name, value, expected, f.Usage)
}

// suggestKey names the closest real key to a misspelt one, if any is close.
func suggestKey(fs *flag.FlagSet, key string) string {
	best, bestDist := "", len(key)/2+2
	fs.VisitAll(func(f *flag.Flag) {
		if notInFile[f.Name] {
			return
		}
		if d := editDistance(key, f.Name); d < bestDist {
			best, bestDist = f.Name, d
		}
	})
	if best == "" {
		return " (run kmigrate proxy -h for the valid keys: the flag names)"
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// misspeltEnv warns of KMIGRATE_ variables that match no flag but nearly
// match one. Other KMIGRATE_ variables (test caches and the like) are not
// ours to judge.
func misspeltEnv(fs *flag.FlagSet, environ []string) []string {
	var known []string
	fs.VisitAll(func(f *flag.Flag) { known = append(known, envName(f.Name)) })
	var warnings []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) || slices.Contains(known, name) {
			continue
		}
		for _, k := range known {
			if editDistance(name, k) <= 2 {
				warnings = append(warnings, fmt.Sprintf("environment %s is not a setting; did you mean %s?", name, k))
				break
			}
		}
	}
	return warnings
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// writeEffectiveConfig prints every setting as a YAML config file, secrets
// masked, each value not at its default followed by where it came from.
func writeEffectiveConfig(w io.Writer, fs *flag.FlagSet, origins configOrigins) error {
	root := &yaml.Node{Kind: yaml.MappingNode}
	fs.VisitAll(func(f *flag.Flag) {
		if notInFile[f.Name] {
			return
		}
		value := &yaml.Node{Kind: yaml.ScalarNode, Value: f.Value.String(), Tag: "!!str"}
		if g, ok := f.Value.(flag.Getter); ok {
			switch g.Get().(type) {
			case bool:
				value.Tag = "!!bool"
			case int, int64, uint, uint64:
				value.Tag = "!!int"
			}
		}
		if isSecret(f.Name) && value.Value != "" {
			value.Value = "***"
		}
		if o := origins[f.Name]; o != "" {
			value.LineComment = "from " + o
		}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: f.Name}, value)
	})
	var buf bytes.Buffer
	buf.WriteString("# kmigrate proxy: effective configuration (flag > environment > file > default); secrets shown as ***\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return fmt.Errorf("print config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("print config: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}
