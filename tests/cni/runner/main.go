// Command runner drives a CNI network list through libcni, the way a container runtime does.
//
// It is built by the tests (GOPATH mode, offline, against Debian's
// golang-github-appc-cni-dev) and run as:
//
//	runner -cmd add|del|check|version -conflist FILE -bin-dirs DIR[:DIR...] \
//	    -cache-dir DIR -container-id ID -netns PATH -ifname eth0 \
//	    -args 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=p' [-capability-args JSON]
//
// On success "add" prints the result JSON (converted to the list's cniVersion), "check" and
// "del" print {}, "version" prints the plugin info of the first plugin. On failure it prints
// {"error": {"code": N, "msg": "...", "details": "..."}} (code 0 when the error did not come
// from a plugin) and exits 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

type failure struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`
}

func fail(err error) {
	f := failure{Msg: err.Error()}
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		f = failure{Code: cniErr.Code, Msg: cniErr.Msg, Details: cniErr.Details}
	}
	out, _ := json.Marshal(map[string]failure{"error": f})
	fmt.Println(string(out))
	os.Exit(1)
}

func parseArgs(s string) [][2]string {
	var out [][2]string
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		parts := strings.SplitN(kv, "=", 2)
		if len(parts) != 2 {
			fail(fmt.Errorf("invalid -args pair %q", kv))
		}
		out = append(out, [2]string{parts[0], parts[1]})
	}
	return out
}

func main() {
	cmd := flag.String("cmd", "add", "add, del, check or version")
	conflist := flag.String("conflist", "", "path of the .conflist")
	binDirs := flag.String("bin-dirs", os.Getenv("CNI_PATH"), "plugin directories, ':'-separated")
	cacheDir := flag.String("cache-dir", "", "libcni cache directory (results for DEL/CHECK)")
	containerID := flag.String("container-id", "", "container id")
	netns := flag.String("netns", "", "network namespace path")
	ifName := flag.String("ifname", "eth0", "interface name inside the container")
	args := flag.String("args", "", "CNI_ARGS as K=V;K=V")
	capArgs := flag.String("capability-args", "", "JSON object of capability args")
	timeout := flag.Duration("timeout", 60*time.Second, "overall timeout")
	flag.Parse()

	if *conflist == "" {
		fail(errors.New("-conflist is required"))
	}
	list, err := libcni.ConfListFromFile(*conflist)
	if err != nil {
		fail(err)
	}
	var paths []string
	for _, d := range filepath.SplitList(*binDirs) {
		if d != "" {
			paths = append(paths, d)
		}
	}
	cni := libcni.NewCNIConfigWithCacheDir(paths, *cacheDir, nil)
	rt := &libcni.RuntimeConf{
		ContainerID: *containerID,
		NetNS:       *netns,
		IfName:      *ifName,
		Args:        parseArgs(*args),
	}
	if *capArgs != "" {
		if err := json.Unmarshal([]byte(*capArgs), &rt.CapabilityArgs); err != nil {
			fail(fmt.Errorf("invalid -capability-args: %w", err))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	switch *cmd {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		out, err := json.Marshal(res)
		if err != nil {
			fail(err)
		}
		fmt.Println(string(out))
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
		fmt.Println("{}")
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
		fmt.Println("{}")
	case "version":
		info, err := cni.GetVersionInfo(ctx, list.Plugins[0].Network.Type)
		if err != nil {
			fail(err)
		}
		out, _ := json.Marshal(map[string]interface{}{
			"supportedVersions": info.SupportedVersions(),
		})
		fmt.Println(string(out))
	default:
		fail(fmt.Errorf("unknown -cmd %q", *cmd))
	}
}
