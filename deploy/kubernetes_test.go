package deploy_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// k8sObject is the part of a Kubernetes object the tests read.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Replicas *int              `yaml:"replicas"`
		Selector k8sSelector       `yaml:"selector"`
		Template k8sPodTemplate    `yaml:"template"`
		Ports    []k8sServicePort  `yaml:"ports"`
		ScaleRef map[string]string `yaml:"scaleTargetRef"`
		MinAv    any               `yaml:"minAvailable"`
		MaxUnav  any               `yaml:"maxUnavailable"`
	} `yaml:"spec"`
}

// k8sSelector is both a Service selector (a plain map) and a label
// selector (matchLabels).
type k8sSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
	Plain       map[string]string `yaml:",inline"`
}

func (s k8sSelector) labels() map[string]string {
	if len(s.MatchLabels) > 0 {
		return s.MatchLabels
	}
	out := map[string]string{}
	for k, v := range s.Plain {
		if k != "matchLabels" && k != "matchExpressions" {
			out[k] = v
		}
	}
	return out
}

type k8sServicePort struct {
	Name       string `yaml:"name"`
	Port       int    `yaml:"port"`
	TargetPort any    `yaml:"targetPort"`
}

type k8sPodTemplate struct {
	Metadata struct {
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Spec struct {
		TerminationGrace *int           `yaml:"terminationGracePeriodSeconds"`
		SecurityContext  map[string]any `yaml:"securityContext"`
		InitContainers   []k8sContainer `yaml:"initContainers"`
		Containers       []k8sContainer `yaml:"containers"`
		Volumes          []struct {
			Name     string `yaml:"name"`
			EmptyDir any    `yaml:"emptyDir"`
			Secret   *struct {
				SecretName string `yaml:"secretName"`
				Items      []struct {
					Key  string `yaml:"key"`
					Path string `yaml:"path"`
				} `yaml:"items"`
			} `yaml:"secret"`
		} `yaml:"volumes"`
	} `yaml:"spec"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
	} `yaml:"envFrom"`
	LivenessProbe   *k8sProbe      `yaml:"livenessProbe"`
	ReadinessProbe  *k8sProbe      `yaml:"readinessProbe"`
	Resources       map[string]any `yaml:"resources"`
	SecurityContext map[string]any `yaml:"securityContext"`
	RestartPolicy   string         `yaml:"restartPolicy"`
	Lifecycle       struct {
		PreStop struct {
			Sleep struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

func decodeK8s(t *testing.T, where string, r io.Reader) []k8sObject {
	t.Helper()
	dec := yaml.NewDecoder(r)
	var objs []k8sObject
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if o.Kind != "" {
			objs = append(objs, o)
		}
	}
}

// readKustomization returns the objects of a kustomization's resource
// files (without applying patches or generators).
func readKustomization(t *testing.T, dir string) []k8sObject {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `yaml:"resources"`
		Patches   []struct {
			Path string `yaml:"path"`
		} `yaml:"patches"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	var objs []k8sObject
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s/kustomization.yaml: resource %s: %v", dir, r, err)
		}
		if st.IsDir() {
			objs = append(objs, readKustomization(t, p)...)
			continue
		}
		f, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, decodeK8s(t, p, bytes.NewReader(f))...)
	}
	for _, p := range k.Patches {
		if p.Path != "" {
			if _, err := os.Stat(filepath.Join(dir, p.Path)); err != nil {
				t.Errorf("%s/kustomization.yaml: patch %s: %v", dir, p.Path, err)
			}
		}
	}
	return objs
}

func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// checkManifests checks a set of objects against the binaries.
func checkManifests(t *testing.T, where string, objs []k8sObject) {
	t.Helper()
	configMaps := map[string]map[string]string{}
	var deployments []k8sObject
	for _, o := range objs {
		switch o.Kind {
		case "ConfigMap":
			configMaps[o.Metadata.Name] = o.Data
		case "Deployment":
			deployments = append(deployments, o)
		}
	}
	seen := map[string]bool{}
	for _, d := range deployments {
		dw := where + " Deployment " + d.Metadata.Name
		pod := d.Spec.Template
		if !subset(d.Spec.Selector.labels(), pod.Metadata.Labels) {
			t.Errorf("%s: selector %v does not match the pod labels %v", dw, d.Spec.Selector.labels(), pod.Metadata.Labels)
		}
		if pod.Spec.SecurityContext["runAsNonRoot"] != true {
			t.Errorf("%s: pod securityContext.runAsNonRoot is not true", dw)
		}
		var c *k8sContainer
		for i := range pod.Spec.Containers {
			if len(pod.Spec.Containers[i].Args) > 0 && binaries[pod.Spec.Containers[i].Args[0]] != "" {
				c = &pod.Spec.Containers[i]
			}
		}
		if c == nil {
			if d.Metadata.Labels["app.kubernetes.io/name"] == "nudge" {
				t.Errorf("%s: no container runs api or dispatcher", dw)
			}
			continue
		}
		bin := c.Args[0]
		seen[bin] = true
		// Every NUDGE_* the container gets is a setting of its binary.
		env := map[string]string{}
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef == nil {
				continue
			}
			data, ok := configMaps[ef.ConfigMapRef.Name]
			if !ok {
				t.Errorf("%s: envFrom ConfigMap %s is not in the manifests", dw, ef.ConfigMapRef.Name)
			}
			for k, v := range data {
				env[k] = v
			}
		}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		checkEnvNames(t, bin, dw, slices.Collect(mapKeys(env)))
		settings := settingsOf(t, bin)
		value := func(name string) string { return cmpOr(env[name], settings[name]) }

		// Ports and probes.
		port := portOf(t, value("NUDGE_HTTP_ADDR"))
		portName := ""
		for _, p := range c.Ports {
			if itoaPort(p.ContainerPort) == port {
				portName = p.Name
			}
		}
		if portName == "" {
			t.Errorf("%s: no containerPort %s (NUDGE_HTTP_ADDR %s)", dw, port, value("NUDGE_HTTP_ADDR"))
		}
		// Prometheus scrapes /metrics where the binary serves it: the api's
		// own metrics listener (NUDGE_METRICS_ADDR, off the public port)
		// when set, else the HTTP port; a container port must expose it.
		if ann := pod.Metadata.Annotations; ann["prometheus.io/scrape"] == "true" {
			want := port
			if m := value("NUDGE_METRICS_ADDR"); m != "" {
				want = portOf(t, m)
			}
			exposed := slices.ContainsFunc(c.Ports, func(p struct {
				Name          string `yaml:"name"`
				ContainerPort int    `yaml:"containerPort"`
			}) bool {
				return itoaPort(p.ContainerPort) == want
			})
			if ann["prometheus.io/port"] != want || ann["prometheus.io/path"] != "/metrics" || !exposed {
				t.Errorf("%s: prometheus.io/port %q path %q, want %s (and a containerPort) /metrics", dw, ann["prometheus.io/port"], ann["prometheus.io/path"], want)
			}
		}
		for _, pr := range []struct {
			probe *k8sProbe
			path  string
		}{{c.LivenessProbe, "/healthz"}, {c.ReadinessProbe, "/readyz"}} {
			if pr.probe == nil || pr.probe.HTTPGet == nil || pr.probe.HTTPGet.Path != pr.path ||
				(pr.probe.HTTPGet.Port != portName && itoaAny(pr.probe.HTTPGet.Port) != port) {
				t.Errorf("%s: want an httpGet probe on %s port %s/%s", dw, pr.path, portName, port)
			}
		}
		// Resources and hardening.
		if c.Resources["requests"] == nil || c.Resources["limits"] == nil {
			t.Errorf("%s: want resource requests and limits", dw)
		}
		if c.SecurityContext["readOnlyRootFilesystem"] != true || c.SecurityContext["allowPrivilegeEscalation"] != false {
			t.Errorf("%s: want readOnlyRootFilesystem true and allowPrivilegeEscalation false", dw)
		}
		// Grace period beyond the drain.
		shutdown, err := time.ParseDuration(value("NUDGE_SHUTDOWN_TIMEOUT"))
		if err != nil {
			t.Fatalf("%s: NUDGE_SHUTDOWN_TIMEOUT: %v", dw, err)
		}
		need := shutdown + time.Duration(c.Lifecycle.PreStop.Sleep.Seconds)*time.Second
		grace := 30 // the Kubernetes default
		if g := pod.Spec.TerminationGrace; g != nil {
			grace = *g
		}
		if time.Duration(grace)*time.Second <= need {
			t.Errorf("%s: terminationGracePeriodSeconds %d must exceed preStop + NUDGE_SHUTDOWN_TIMEOUT (%v)", dw, grace, need)
		}
		// Every *_FILE setting points into a mounted volume that holds it.
		mounts := map[string]string{}
		for _, cc := range append(slices.Clone(pod.Spec.InitContainers), *c) {
			if cc.Name == c.Name || cc.RestartPolicy == "Always" {
				for _, m := range cc.VolumeMounts {
					if cc.Name == c.Name {
						mounts[m.MountPath] = m.Name
					}
				}
			}
		}
		for name, v := range env {
			if !strings.HasSuffix(name, "_FILE") || v == "" {
				continue
			}
			dir, file := filepath.Split(v)
			vol, ok := mounts[filepath.Clean(dir)]
			if !ok {
				t.Errorf("%s: %s=%s is not in a mounted volume", dw, name, v)
				continue
			}
			for _, pv := range pod.Spec.Volumes {
				if pv.Name != vol || pv.Secret == nil {
					continue
				}
				if !slices.ContainsFunc(pv.Secret.Items, func(it struct {
					Key  string `yaml:"key"`
					Path string `yaml:"path"`
				}) bool {
					return it.Path == file
				}) {
					t.Errorf("%s: %s=%s: Secret %s projects no %s", dw, name, v, pv.Secret.SecretName, file)
				}
			}
		}
		// A native sidecar (pushemu) must be a program of the image.
		for _, ic := range pod.Spec.InitContainers {
			if ic.RestartPolicy == "Always" && (len(ic.Args) == 0 || !slices.Contains(nudgeBinaries, ic.Args[0])) {
				t.Errorf("%s: sidecar %s runs %v", dw, ic.Name, ic.Args)
			}
		}
	}
	for bin := range binaries {
		if !seen[bin] {
			t.Errorf("%s: no Deployment runs %s", where, bin)
		}
	}
	// Services, HPAs and PDBs point at the Deployments.
	for _, o := range objs {
		ow := where + " " + o.Kind + " " + o.Metadata.Name
		var sel map[string]string
		switch o.Kind {
		case "Service", "PodDisruptionBudget":
			sel = o.Spec.Selector.labels()
		case "HorizontalPodAutoscaler":
			if !slices.ContainsFunc(deployments, func(d k8sObject) bool { return d.Metadata.Name == o.Spec.ScaleRef["name"] }) {
				t.Errorf("%s: scaleTargetRef %v is not a Deployment here", ow, o.Spec.ScaleRef)
			}
			continue
		default:
			continue
		}
		i := slices.IndexFunc(deployments, func(d k8sObject) bool { return subset(sel, d.Spec.Template.Metadata.Labels) })
		if i < 0 {
			if o.Metadata.Labels["app.kubernetes.io/name"] == "nudge" {
				t.Errorf("%s: selector %v matches no Deployment", ow, sel)
			}
			continue
		}
		for _, p := range o.Spec.Ports {
			ok := false
			for _, c := range deployments[i].Spec.Template.Spec.Containers {
				for _, cp := range c.Ports {
					ok = ok || cp.Name == p.TargetPort || itoaPort(cp.ContainerPort) == itoaAny(p.TargetPort)
				}
			}
			if !ok {
				t.Errorf("%s: port %s targets %v, which no container of %s exposes", ow, p.Name, p.TargetPort, deployments[i].Metadata.Name)
			}
		}
	}
}

func itoaPort(n int) string { return strings.TrimSpace(yamlString(n)) }

func itoaAny(v any) string { return strings.TrimSpace(yamlString(v)) }

func yamlString(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}

// TestKubernetesManifests checks the kustomize base as written and, when
// kubectl or kustomize is on the PATH (required when CI=true), each overlay
// as kustomize renders it.
func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	t.Run("base", func(t *testing.T) {
		t.Parallel()
		checkManifests(t, "kubernetes/base", readKustomization(t, "kubernetes/base"))
	})
	for _, overlay := range []string{"staging", "production"} {
		t.Run(overlay, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join("kubernetes/overlays", overlay)
			readKustomization(t, dir) // resources and patch files exist
			render := []string{"kubectl", "kustomize", dir}
			bin, err := exec.LookPath("kubectl")
			if err != nil {
				render = []string{"kustomize", "build", dir}
				bin, err = exec.LookPath("kustomize")
			}
			if err != nil {
				if os.Getenv("CI") == "true" { // scripts/deps.sh installs kustomize in CI
					t.Fatal("neither kubectl nor kustomize on PATH with CI=true: run scripts/deps.sh")
				}
				t.Skip("neither kubectl nor kustomize on PATH: overlay not rendered (scripts/deps.sh says how to install it)")
			}
			out, err := exec.Command(bin, render[1:]...).Output()
			if err != nil {
				t.Fatalf("%s: %v", strings.Join(render, " "), err)
			}
			objs := decodeK8s(t, dir, bytes.NewReader(out))
			checkManifests(t, dir, objs)
			if overlay == "staging" {
				checkStagingEmulator(t, objs)
			}
		})
	}
}

// checkStagingEmulator compares the staging dispatcher's emulator settings
// with the compose file's, which the compose stack test checks against
// what pushemu prints.
func checkStagingEmulator(t *testing.T, objs []k8sObject) {
	t.Helper()
	compose := readCompose(t, "docker-compose.yml").Services["dispatcher"].Environment
	for _, o := range objs {
		if o.Kind != "Deployment" || o.Metadata.Name != "nudge-dispatcher" {
			continue
		}
		for _, c := range o.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if want, ok := compose[e.Name]; ok && e.Value != "" && e.Value != want {
					t.Errorf("staging dispatcher %s=%s, the compose stack has %s", e.Name, e.Value, want)
				}
			}
		}
		return
	}
	t.Errorf("staging: no nudge-dispatcher Deployment")
}
