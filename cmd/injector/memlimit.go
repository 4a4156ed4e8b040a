package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
)

// The injector's memory budget. The chart puts the container's memory limit
// in $REMORA_MEMORY_LIMIT (a resourceFieldRef, in bytes); serve sets the Go
// runtime's soft limit to a share of it, so that the garbage collector runs
// harder as the heap nears the limit instead of letting the kernel kill the
// webhook. GOMEMLIMIT, when set, wins (the runtime has already read it).
const (
	envMemoryLimit          = "REMORA_MEMORY_LIMIT"
	defaultMemoryLimitRatio = 0.8
	// Client-side rate limits of the API clients (see docs/webhook.md).
	defaultKubeAPIQPS   = 50
	defaultKubeAPIBurst = 100
)

// setMemoryLimit applies ratio to $REMORA_MEMORY_LIMIT.
func setMemoryLimit(ratio float64, log logr.Logger) error {
	if os.Getenv("GOMEMLIMIT") != "" {
		log.Info("Memory limit from GOMEMLIMIT", "bytes", debug.SetMemoryLimit(-1))
		return nil
	}
	raw := strings.TrimSpace(os.Getenv(envMemoryLimit))
	if raw == "" {
		return nil
	}
	limit, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || limit <= 0 {
		return fmt.Errorf("$%s=%q: must be the container's memory limit in bytes, a positive integer", envMemoryLimit, raw)
	}
	soft := int64(float64(limit) * ratio)
	debug.SetMemoryLimit(soft)
	log.Info("Set the Go runtime's soft memory limit", "bytes", soft, "containerLimit", limit, "ratio", ratio)
	return nil
}
