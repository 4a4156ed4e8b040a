package framework

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcStatus holds the memory figures of /proc/PID/status, in bytes.
type ProcStatus struct {
	// RSS is VmRSS: the resident set size now.
	RSS int64
	// HWM is VmHWM: the peak resident set size since the process started.
	HWM int64
}

// ReadProcStatus reads /proc/PID/status.
func ReadProcStatus(pid int) (ProcStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcStatus{}, err
	}
	return ParseProcStatus(b)
}

// ParseProcStatus parses the VmRSS and VmHWM lines of /proc/PID/status
// ("VmRSS:	  123456 kB"). Both must be present: a kernel thread or a
// zombie has neither, and a zero would read as a measurement.
func ParseProcStatus(b []byte) (ProcStatus, error) {
	var st ProcStatus
	fields := map[string]*int64{"VmRSS": &st.RSS, "VmHWM": &st.HWM}
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		dst, want := fields[name]
		if !ok || !want {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return ProcStatus{}, fmt.Errorf("/proc status: %s: want \"<n> kB\", got %q", name, strings.TrimSpace(rest))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return ProcStatus{}, fmt.Errorf("/proc status: %s: %q is not a size", name, f[0])
		}
		*dst = kb << 10
		found++
	}
	if err := sc.Err(); err != nil {
		return ProcStatus{}, err
	}
	if found != len(fields) {
		return ProcStatus{}, fmt.Errorf("/proc status: no VmRSS and VmHWM (a zombie or kernel thread?)")
	}
	return st, nil
}
