package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = fmt.Fprintf(c, "greeting peer=%s\n", c.RemoteAddr())
			_ = c.Close()
		}
	}()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		_, _ = fmt.Fprint(w, "hello")
	}))
	t.Cleanup(web.Close)
	webAddr := strings.TrimPrefix(web.URL, "http://")

	res := dial(t.Context(), ln.Addr().String(), "tcp", "")
	if res.err != nil || res.reply != "greeting peer="+res.local {
		t.Errorf("tcp: %s (the reply should name the client's own address)", res)
	}
	if !strings.HasPrefix(res.String(), "ok target=") {
		t.Errorf("tcp result line: %s", res)
	}
	if res := dial(t.Context(), webAddr, "http", "/"); res.err != nil || res.reply != "200 hello" {
		t.Errorf("http: %s", res)
	}
	if res := dial(t.Context(), webAddr, "http", "/missing"); res.err == nil || !strings.HasPrefix(res.String(), "fail ") {
		t.Errorf("http 404: %s", res)
	}
	if res := dial(t.Context(), "", "tcp", ""); res.err == nil {
		t.Error("dial without a target succeeded")
	}
}
