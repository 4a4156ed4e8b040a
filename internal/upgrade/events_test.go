package upgrade

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	dto "github.com/prometheus/client_model/go"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func eventsCounter(t *testing.T, result string) float64 {
	t.Helper()
	m := &dto.Metric{}
	if err := eventsTotal.WithLabelValues(result).Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestEventQueueBounded: an Event that finds the queue full is dropped and
// counted; emit never blocks and starts no goroutine.
func TestEventQueueBounded(t *testing.T) {
	sink := newEventSink(nil, clientgoscheme.Scheme, logr.Discard()) // not run: nothing drains the queue
	dropped0 := eventsCounter(t, eventDropped)
	obj := reference("v1", KindPod, "ns", "p", "uid")
	for range eventQueueSize + 7 {
		sink.emit(obj, "Normal", ReasonOutdatedSidecars, "Report", "note")
	}
	if got := len(sink.queue); got != eventQueueSize {
		t.Errorf("%d Events queued, want %d", got, eventQueueSize)
	}
	if got := eventsCounter(t, eventDropped) - dropped0; got != 7 {
		t.Errorf("%v Events counted as dropped, want 7", got)
	}
	e := <-sink.queue
	if e.Regarding.Kind != KindPod || e.Regarding.UID != "uid" || e.Namespace != "ns" || e.ReportingController != eventReportingController {
		t.Errorf("Event %+v", e)
	}
	sink.emit(reference("v1", "Namespace", "", "ns", ""), "Normal", ReasonOutdatedSidecars, "Report", strings.Repeat("x", 2000))
	for len(sink.queue) > 1 {
		<-sink.queue
	}
	if e := <-sink.queue; e.Namespace != "default" || len(e.Note) != 1024 {
		t.Errorf("an Event on a namespace is in %q with a note of %d bytes; want default and 1024", e.Namespace, len(e.Note))
	}
}

// TestReportBounded: a change that makes many workloads outdated gives a
// bounded number of Events and log lines, and counts the rest.
func TestReportBounded(t *testing.T) {
	sink := newEventSink(nil, clientgoscheme.Scheme, logr.Discard())
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
	r := &reconciler{events: sink, log: log, reported: map[Ref]string{}}
	const small, big = 3, 40
	rep := &Report{Hash: "h2", NamespaceUIDs: map[string]types.UID{"big": "big-uid"}}
	for i := range big {
		rep.Workloads = append(rep.Workloads, WorkloadReport{Ref: Ref{KindPod, "big", fmt.Sprintf("p%02d", i)},
			Counts: Counts{Total: 1, Outdated: 1}, apiVersion: "v1", resolved: true})
	}
	for i := range small {
		rep.Workloads = append(rep.Workloads, WorkloadReport{Ref: Ref{KindPod, "small", fmt.Sprintf("p%02d", i)},
			Counts: Counts{Total: 1, Outdated: 1}, apiVersion: "v1", resolved: true})
	}
	r.report(rep, &plan{why: map[Ref]string{}})

	perNS := map[string]int{}
	var summary string
	for len(sink.queue) > 0 {
		e := <-sink.queue
		switch e.Regarding.Kind {
		case KindPod:
			perNS[e.Regarding.Namespace]++
		case "Namespace":
			if e.Regarding.Name != "big" || e.Regarding.UID != "big-uid" {
				t.Errorf("namespace Event regarding %+v", e.Regarding)
			}
			summary = e.Note
		}
	}
	if perNS["big"] != maxEventsPerNamespace || perNS["small"] != small {
		t.Errorf("workload Events per namespace %v, want big=%d small=%d", perNS, maxEventsPerNamespace, small)
	}
	if want := fmt.Sprintf("%d more workloads in namespace big (%d pods)", big-maxEventsPerNamespace, big-maxEventsPerNamespace); !strings.Contains(summary, want) {
		t.Errorf("namespace Event %q, want it to say %q", summary, want)
	}
	if len(lines) != maxLoggedWorkloads+1 {
		t.Errorf("%d log lines, want %d and a summary", len(lines), maxLoggedWorkloads)
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, fmt.Sprintf(`"workloads"=%d`, big+small-maxLoggedWorkloads)) {
		t.Errorf("summary line %s", last)
	}
	if len(r.reported) != big+small {
		t.Errorf("%d workloads marked reported, want all %d", len(r.reported), big+small)
	}

	// The same hash again: nothing more.
	lines = nil
	r.report(rep, &plan{why: map[Ref]string{}})
	if len(sink.queue) != 0 || len(lines) != 0 {
		t.Errorf("a second evaluation of the same hash wrote %d Events and %d lines", len(sink.queue), len(lines))
	}
}

// TestEventSinkFlushesAtShutdown: Events queued when the controller stops
// are written within the flush timeout, not lost (a real API server).
func TestEventSinkFlushesAtShutdown(t *testing.T) {
	c := startCluster(t)
	ns := "flush"
	c.createNamespace(t, ns, nil, nil)
	sink := newEventSink(c.client, c.scheme, logr.Discard())
	sent0 := eventsCounter(t, eventSent)
	const n = 60 // more than the burst: some wait for the rate limiter
	for i := range n {
		sink.emit(reference("v1", KindPod, ns, fmt.Sprintf("p%02d", i), ""), "Normal", ReasonOutdatedSidecars, "Report", "note")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // shutting down before the workers wrote anything
	done := make(chan struct{})
	go func() { sink.run(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(eventFlushTimeout + 10*time.Second):
		t.Fatal("the sink did not stop within its flush timeout")
	}
	if got := eventsCounter(t, eventSent) - sent0; got != n {
		t.Errorf("%v Events sent at shutdown, want %d", got, n)
	}
	list := &eventsv1.EventList{}
	if err := c.client.List(t.Context(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != n {
		t.Errorf("%d Events in the API server, want %d", len(list.Items), n)
	}
}
