// Package grpchealth speaks just enough of the gRPC health checking protocol
// (grpc.health.v1.Health/Check) over cleartext HTTP/2 for the test images:
// a server the test app exposes and a client the stand-in proxy uses to run
// a pod's rewritten gRPC probes. It uses only the standard library (net/http
// with unencrypted HTTP/2 and a hand-encoded two-field protobuf), so the test
// images need no gRPC dependency. Real gRPC clients, the kubelet's gRPC prober
// among them, can call the server.
package grpchealth

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// CheckPath is the HTTP/2 path of the Check method.
const CheckPath = "/grpc.health.v1.Health/Check"

// Serving statuses of grpc.health.v1.HealthCheckResponse.
const (
	StatusUnknown    = 0
	StatusServing    = 1
	StatusNotServing = 2
)

// gRPC status codes used here.
const (
	codeOK            = 0
	codeUnimplemented = 12
)

// Protocols returns the protocol set for servers and clients: HTTP/1.1 (for
// a plain curl) and HTTP/2 with prior knowledge, which is how gRPC speaks
// over cleartext.
func Protocols() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &p
}

// frame wraps a protobuf message in gRPC's length-prefixed message framing.
func frame(msg []byte) []byte {
	b := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:5], uint32(len(msg))) //nolint:gosec // G115: messages here are a few bytes
	copy(b[5:], msg)
	return b
}

// unframe returns the first message of a gRPC body.
func unframe(b []byte) ([]byte, error) {
	if len(b) < 5 {
		return nil, fmt.Errorf("grpc body of %d bytes", len(b))
	}
	if b[0] != 0 {
		return nil, errors.New("compressed grpc message")
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if int64(len(b)-5) < int64(n) {
		return nil, fmt.Errorf("grpc message of %d bytes, body has %d", n, len(b)-5)
	}
	return b[5 : 5+n], nil
}

// Handler serves Check, answering SERVING while serving() is true and
// NOT_SERVING otherwise, for every service name. Other methods get
// UNIMPLEMENTED.
func Handler(serving func() bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<16))
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
		if r.Method != http.MethodPost || r.URL.Path != CheckPath {
			w.WriteHeader(http.StatusOK)
			w.Header().Set("Grpc-Status", strconv.Itoa(codeUnimplemented))
			w.Header().Set("Grpc-Message", "only "+CheckPath+" is implemented")
			return
		}
		status := byte(StatusNotServing)
		if serving() {
			status = StatusServing
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(frame([]byte{0x08, status})) // field 1 (status), varint
		w.Header().Set("Grpc-Status", strconv.Itoa(codeOK))
		w.Header().Set("Grpc-Message", "")
	})
}

// Check calls grpc.health.v1.Health/Check for service on addr (host:port)
// over cleartext HTTP/2 and returns the serving status.
func Check(ctx context.Context, addr, service string) (int, error) {
	var msg []byte
	if service != "" {
		if len(service) > 127 {
			return 0, errors.New("service name too long")
		}
		msg = append([]byte{0x0a, byte(len(service))}, service...) //nolint:gosec // G115: at most 127, checked above; field 1 (service), string
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+CheckPath, bytes.NewReader(frame(msg)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	tr := &http.Transport{Protocols: &http.Protocols{}}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("http status %d", resp.StatusCode)
	}
	code := resp.Trailer.Get("Grpc-Status")
	if code == "" { // a trailers-only response carries the status in the headers
		code = resp.Header.Get("Grpc-Status")
	}
	if code != strconv.Itoa(codeOK) {
		return 0, fmt.Errorf("grpc status %q: %s", code, resp.Trailer.Get("Grpc-Message"))
	}
	m, err := unframe(body)
	if err != nil {
		return 0, err
	}
	// HealthCheckResponse: field 1, varint. An empty message is UNKNOWN.
	if len(m) >= 2 && m[0] == 0x08 {
		return int(m[1]), nil
	}
	return StatusUnknown, nil
}
