package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestDeployExamples keeps deploy/ from rotting: every YAML file parses, and
// every kmigrate it configures (a config file, or a Kubernetes container
// running the kmigrate image with its arguments, KMIGRATE_* variables and
// ConfigMap) loads with the binary's own configuration code, so a renamed
// flag or a bad value fails here.
func TestDeployExamples(t *testing.T) {
	root := filepath.Join("..", "..", "deploy")
	checked := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (!strings.HasSuffix(p, ".yaml") && !strings.HasSuffix(p, ".yml")) {
			return err
		}
		docs, err := yamlDocuments(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return nil
		}
		if len(docs) == 1 && docs[0]["kind"] == nil {
			// A kmigrate config file.
			if _, _, _, err := loadTestConfig(t, "", nil, "--config", p); err != nil {
				t.Errorf("%s: %v", p, err)
			}
			checked++
			return nil
		}
		configMaps := map[string]map[string]any{}
		for _, doc := range docs {
			if doc["kind"] == "ConfigMap" {
				configMaps[str(dig(doc, "metadata", "name"))], _ = dig(doc, "data").(map[string]any)
			}
		}
		for _, doc := range docs {
			for _, c := range kmigrateContainers(doc) {
				t.Run(fmt.Sprintf("%s/%s/%s", filepath.Base(p), str(dig(doc, "metadata", "name")), str(c["name"])), func(t *testing.T) {
					checkContainer(t, doc, c, configMaps)
				})
				checked++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 3 {
		t.Fatalf("checked %d kmigrate configurations under deploy/, want the config file, the sidecar and the control plane", checked)
	}
}

// checkContainer loads the container's kmigrate configuration as the
// binary would in its pod.
func checkContainer(t *testing.T, workload, c map[string]any, configMaps map[string]map[string]any) {
	var args []string
	for _, a := range list(c["args"]) {
		args = append(args, str(a))
	}
	if len(args) == 0 || args[0] != "proxy" {
		t.Fatalf("args %q: want the proxy command first", args)
	}
	args = args[1:]

	// The pod's first replica: what the downward API would give it.
	podName := str(dig(workload, "metadata", "name")) + "-0"
	fields := map[string]string{"metadata.name": podName, "status.podIP": "10.1.2.3"}
	env := map[string]string{}
	for _, e := range list(c["env"]) {
		e := e.(map[string]any)
		name := str(e["name"])
		value := str(e["value"])
		if ref := str(dig(e, "valueFrom", "fieldRef", "fieldPath")); ref != "" {
			value = fields[ref]
		} else if dig(e, "valueFrom", "secretKeyRef") != nil {
			value = "secret-from-" + str(dig(e, "valueFrom", "secretKeyRef", "key"))
		}
		env[name] = expandK8s(value, env)
	}
	flags, _ := newProxyFlags()
	for name := range env {
		if strings.HasPrefix(name, envPrefix) && flags.Lookup(strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, envPrefix), "_", "-"))) == nil {
			t.Errorf("env %s is not the variable of any kmigrate proxy flag", name)
		}
	}

	// --config points into a mounted ConfigMap: give the binary its content.
	for i := 0; i+1 < len(args); i++ {
		if args[i] != "--config" {
			continue
		}
		content, err := mountedFile(workload, c, args[i+1], configMaps)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "kmigrate.yaml")
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		args[i+1] = file
	}
	o, _, warnings, err := loadTestConfig(t, "", env, args...)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %q", warnings)
	}
	if o.source.bootstrap == "" {
		t.Error("no source-bootstrap: the proxy would refuse to start")
	}
	if workload["kind"] == "StatefulSet" && o.cp.join != "" && o.cp.join != o.cp.adminAdvertise {
		// Replica 0 must recognise itself in --join, or nobody bootstraps.
		t.Errorf("replica %s: --join %s differs from its --admin-advertise %s", podName, o.cp.join, o.cp.adminAdvertise)
	}
}

// kmigrateContainers are the containers of a workload that run the kmigrate
// image.
func kmigrateContainers(doc map[string]any) []map[string]any {
	spec := dig(doc, "spec", "template", "spec")
	var out []map[string]any
	for _, key := range []string{"initContainers", "containers"} {
		for _, c := range list(dig(spec, key)) {
			c := c.(map[string]any)
			if image := str(c["image"]); strings.Contains(path.Base(image), "kmigrate") {
				out = append(out, c)
			}
		}
	}
	return out
}

// mountedFile is the content a container sees at file through a ConfigMap
// volume.
func mountedFile(workload, c map[string]any, file string, configMaps map[string]map[string]any) (string, error) {
	for _, m := range list(c["volumeMounts"]) {
		m := m.(map[string]any)
		dir := str(m["mountPath"])
		if path.Dir(file) != path.Clean(dir) {
			continue
		}
		for _, v := range list(dig(workload, "spec", "template", "spec", "volumes")) {
			v := v.(map[string]any)
			if v["name"] != m["name"] {
				continue
			}
			cm := str(dig(v, "configMap", "name"))
			data, ok := configMaps[cm]
			if !ok {
				return "", fmt.Errorf("%s: ConfigMap %q is not in the same file", file, cm)
			}
			content, ok := data[path.Base(file)].(string)
			if !ok {
				return "", fmt.Errorf("%s: ConfigMap %q has no key %q", file, cm, path.Base(file))
			}
			return content, nil
		}
	}
	return "", fmt.Errorf("--config %s: no ConfigMap volume is mounted there", file)
}

// expandK8s expands $(VAR) from the variables defined before, as the
// kubelet does.
func expandK8s(s string, env map[string]string) string {
	return regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).ReplaceAllStringFunc(s, func(ref string) string {
		if v, ok := env[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

func yamlDocuments(p string) ([]map[string]any, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			return docs, nil
		} else if err != nil {
			return nil, err
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func list(v any) []any { l, _ := v.([]any); return l }

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}
