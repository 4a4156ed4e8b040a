package realpods_test

import (
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestTraffic is scenario 1: an injected Deployment's pods become Ready, and
// their traffic goes where Istio's capture rules send it. Outbound
// connections to another pod go through the proxy (15001) with the right
// original destination; inbound connections go through 15006; a connection
// to a MySQL-style backend excluded with
// traffic.sidecar.istio.io/excludeOutboundIPRanges reaches it directly; the
// proxy's own connections are not captured again.
func TestTraffic(t *testing.T) {
	c := cluster(t)
	ctx := t.Context()
	ns := namespace(t, "traffic", true)

	mysql := startMySQL(t, ns)
	mysqlIP := mysql.Status.PodIP
	mysqlAddr := net.JoinHostPort(mysqlIP, "3306")

	// "web" reaches the database directly; "client" has no exclusion.
	create(t, newDeployment(ns, "web", 2, fast(annotationExcludeOutbound, mysqlIP+"/32")))
	create(t, newPod(ns, "client", fast()))
	web, err := waitPods(ctx, ns, "web", 2, podTimeout, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := waitReady(t, ns, "client")
	for i := range web {
		requireInjected(t, &web[i], true)
	}
	requireInjected(t, client, true)
	webIP, web2IP, clientIP := web[0].Status.PodIP, web[1].Status.PodIP, client.Status.PodIP
	t.Logf("mysql %s, web %s and %s, client %s", mysqlIP, webIP, web2IP, clientIP)

	t.Run("istio-init programmed the capture and the exclusion", func(t *testing.T) {
		rules, err := c.NetnsExec(ctx, &web[0], "iptables-save", "-t", "nat")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
			"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
			"-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
			"-A ISTIO_OUTPUT -d " + mysqlIP + "/32 -j RETURN",
		} {
			if !strings.Contains(rules, want+"\n") {
				t.Errorf("web's nat table lacks %q:\n%s", want, rules)
			}
		}
	})

	t.Run("inbound connections reach the app through 15006", func(t *testing.T) {
		body := get(t, http.MethodGet, webIP, appHTTPPort, "/whoami")
		if !strings.Contains(body, `"peer":"127.0.0.6:`) {
			t.Errorf("the app saw the connection from elsewhere than the proxy's 127.0.0.6: %s", body)
		}
		in := conns(proxyConns(t, webIP), "inbound", net.JoinHostPort(webIP, "8080"))
		if len(in) == 0 {
			t.Fatalf("web's proxy recorded no inbound connection to %s:8080", webIP)
		}
		if host, _, _ := net.SplitHostPort(in[len(in)-1].From); host != c.NodeIP.String() {
			t.Errorf("inbound connection from %s, want the node %s", in[len(in)-1].From, c.NodeIP)
		}
	})

	t.Run("outbound connection to another pod goes through the proxy", func(t *testing.T) {
		target := net.JoinHostPort(webIP, "9090")
		res := call(t, clientIP, target)
		if !res.OK {
			t.Fatalf("client -> web: %s", res.Line)
		}
		// The server saw the connection from its own proxy's inbound side.
		if !strings.Contains(res.Reply, "peer=127.0.0.6:") {
			t.Errorf("web's app saw %q, want the connection from its proxy (127.0.0.6)", res.Reply)
		}
		out := conns(proxyConns(t, clientIP), "outbound", target)
		if len(out) != 1 {
			t.Fatalf("client's proxy recorded %d outbound connections to %s, want 1: %+v", len(out), target, out)
		}
		if out[0].From != res.Local || out[0].Error != "" {
			t.Errorf("client's proxy: outbound to %s from %s (error %q), but the app's socket was %s", target, out[0].From, out[0].Error, res.Local)
		}
		// The proxy's upstream connection arrived at web's proxy, captured
		// inbound with the same original destination.
		in := conns(proxyConns(t, webIP), "inbound", target)
		if len(in) != 1 || in[0].From != out[0].Upstream {
			t.Errorf("web's proxy: inbound to %s %+v, want one from the client proxy's %s", target, in, out[0].Upstream)
		}
	})

	t.Run("MySQL excluded by IP range is reached directly", func(t *testing.T) {
		res := call(t, web2IP, mysqlAddr)
		if !res.OK {
			t.Fatalf("web -> mysql: %s", res.Line)
		}
		if host, _, _ := net.SplitHostPort(res.Local); host != web2IP {
			t.Fatalf("web's socket %s is not on its pod IP %s", res.Local, web2IP)
		}
		// The database saw the app's own socket: no proxy in between.
		if !strings.Contains(res.Reply, "peer="+res.Local) {
			t.Errorf("the MySQL stand-in greeted %q, want peer=%s (the app's own socket)", res.Reply, res.Local)
		}
		if !hasPeer(mysqlPeers(t, mysqlIP), res.Local) {
			t.Errorf("the MySQL stand-in did not record the app's socket %s", res.Local)
		}
		if out := conns(proxyConns(t, web2IP), "outbound", mysqlAddr); len(out) != 0 {
			t.Errorf("web's proxy recorded the excluded connection to %s: %+v", mysqlAddr, out)
		}
	})

	t.Run("MySQL without the exclusion is reached through the proxy", func(t *testing.T) {
		res := call(t, clientIP, mysqlAddr)
		if !res.OK {
			t.Fatalf("client -> mysql: %s", res.Line)
		}
		out := conns(proxyConns(t, clientIP), "outbound", mysqlAddr)
		if len(out) != 1 || out[0].From != res.Local {
			t.Fatalf("client's proxy: outbound to %s %+v, want one from the app's %s", mysqlAddr, out, res.Local)
		}
		// Same pod IP, but the proxy's socket, not the app's.
		if !strings.Contains(res.Reply, "peer="+out[0].Upstream) || strings.Contains(res.Reply, "peer="+res.Local) {
			t.Errorf("the MySQL stand-in greeted %q; want the proxy's socket %s, not the app's %s", res.Reply, out[0].Upstream, res.Local)
		}
	})

	t.Run("the proxy's own connections are not captured again", func(t *testing.T) {
		for _, ip := range []string{clientIP, webIP, web2IP} {
			all := proxyConns(t, ip)
			upstreams := map[string]bool{}
			for _, conn := range all {
				if conn.Upstream != "" {
					upstreams[conn.Upstream] = true
				}
			}
			for _, conn := range all {
				if conn.Error != "" {
					t.Errorf("proxy of %s: %s connection to %s from %s failed: %s", ip, conn.Direction, conn.Orig, conn.From, conn.Error)
				}
				// A looped connection is the proxy's own upstream captured
				// again (outbound), or the inbound passthrough sent back to
				// 15006.
				if upstreams[conn.From] || strings.HasPrefix(conn.From, "127.0.0.6:") {
					t.Errorf("proxy of %s captured its own connection: %+v", ip, conn)
				}
				if _, port, _ := net.SplitHostPort(conn.Orig); port == "15001" || port == "15006" {
					t.Errorf("proxy of %s: a connection to its own port: %+v", ip, conn)
				}
			}
			t.Logf("proxy of %s: %d connections recorded, none looped", ip, len(all))
		}
	})
}

func hasPeer(peers []mysqlPeer, addr string) bool {
	for _, p := range peers {
		if p.Peer == addr {
			return true
		}
	}
	return false
}
