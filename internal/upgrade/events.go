package upgrade

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// Event emission is bounded: the controller puts Events on a queue of
// eventQueueSize, eventWorkers write them to the API server at no more than
// eventRate a second, and an Event that finds the queue full is dropped
// and counted (remora_events_total{result="dropped"}). No goroutine is
// started per Event. At shutdown the workers have eventFlushTimeout to
// write what is queued; the rest is dropped and counted.
const (
	eventQueueSize    = 512
	eventWorkers      = 2
	eventRate         = 20
	eventBurst        = 50
	eventFlushTimeout = 5 * time.Second
)

// Event results, the label of remora_events_total.
const (
	eventSent    = "sent"
	eventFailed  = "failed"
	eventDropped = "dropped"
)

// eventSink writes events.k8s.io/v1 Events from a bounded queue.
type eventSink struct {
	client   client.Client
	scheme   *runtime.Scheme
	log      logr.Logger
	instance string
	queue    chan *eventsv1.Event
	limiter  *rate.Limiter
	now      func() time.Time
}

func newEventSink(c client.Client, scheme *runtime.Scheme, log logr.Logger) *eventSink {
	host, _ := os.Hostname()
	return &eventSink{
		client:   c,
		scheme:   scheme,
		log:      log,
		instance: ControllerName + "-" + host,
		queue:    make(chan *eventsv1.Event, eventQueueSize),
		limiter:  rate.NewLimiter(eventRate, eventBurst),
		now:      time.Now,
	}
}

// eventReportingController names the controller on the Events it writes.
const eventReportingController = "remora.io/" + ControllerName

// emit queues an Event regarding obj, or drops it when the queue is full.
// It never blocks.
func (s *eventSink) emit(obj client.Object, eventType, reason, action, note string) {
	if obj == nil {
		return
	}
	now := s.now()
	gvk := obj.GetObjectKind().GroupVersionKind()
	if gvk.Kind == "" {
		var err error
		if gvk, err = apiutil.GVKForObject(obj, s.scheme); err != nil {
			s.log.Error(err, "Not writing an Event regarding an object of unknown kind", "reason", reason)
			return
		}
	}
	apiVersion, kind := gvk.GroupVersion().String(), gvk.Kind
	ns := obj.GetNamespace()
	eventNS := ns
	if eventNS == "" {
		eventNS = metav1.NamespaceDefault // Events on cluster-scoped objects, as client-go puts them
	}
	e := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%x", obj.GetName(), now.UnixNano()),
			Namespace: eventNS,
		},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: eventReportingController,
		ReportingInstance:   s.instance,
		Action:              action,
		Reason:              reason,
		Type:                eventType,
		Note:                truncate(note, 1024),
		Regarding: corev1.ObjectReference{
			APIVersion: apiVersion, Kind: kind, Namespace: ns, Name: obj.GetName(), UID: obj.GetUID(),
		},
	}
	select {
	case s.queue <- e:
	default:
		eventsTotal.WithLabelValues(eventDropped).Inc()
	}
}

// run writes queued Events until ctx ends, then flushes the queue within
// eventFlushTimeout and drops (and counts) what is left.
func (s *eventSink) run(ctx context.Context) {
	var wg sync.WaitGroup
	flushCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	for range eventWorkers {
		wg.Go(func() { s.work(ctx, flushCtx) })
	}
	<-ctx.Done()
	timer := time.AfterFunc(eventFlushTimeout, cancel)
	defer timer.Stop()
	wg.Wait()
	dropped := 0
	for {
		select {
		case <-s.queue:
			dropped++
			continue
		default:
		}
		break
	}
	if dropped > 0 {
		eventsTotal.WithLabelValues(eventDropped).Add(float64(dropped))
		s.log.Info("Dropped Events still queued at shutdown", "events", dropped, "flushTimeout", eventFlushTimeout)
	}
}

// work writes Events; once ctx ends it keeps writing with flushCtx until
// the queue is empty or flushCtx ends.
func (s *eventSink) work(ctx, flushCtx context.Context) {
	for {
		var e *eventsv1.Event
		select {
		case e = <-s.queue:
		case <-ctx.Done():
			select {
			case e = <-s.queue:
			default:
				return
			}
		}
		if flushCtx.Err() != nil {
			eventsTotal.WithLabelValues(eventDropped).Inc()
			continue
		}
		if err := s.limiter.Wait(flushCtx); err != nil {
			eventsTotal.WithLabelValues(eventDropped).Inc()
			continue
		}
		if err := s.client.Create(flushCtx, e); err != nil {
			eventsTotal.WithLabelValues(eventFailed).Inc()
			s.log.V(1).Info("Could not write an Event", "reason", e.Reason,
				"regarding", e.Regarding.Kind+" "+e.Regarding.Namespace+"/"+e.Regarding.Name, "error", err.Error())
			continue
		}
		eventsTotal.WithLabelValues(eventSent).Inc()
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
