package framework

import "testing"

func TestParseProcStatus(t *testing.T) {
	const status = "Name:\tinjector\nState:\tS (sleeping)\nVmPeak:\t 1834560 kB\nVmHWM:\t  402340 kB\nVmRSS:\t  212004 kB\nThreads:\t12\n"
	for _, tc := range []struct {
		name    string
		in      string
		want    ProcStatus
		wantErr bool
	}{
		{name: "running process", in: status, want: ProcStatus{RSS: 212004 << 10, HWM: 402340 << 10}},
		{name: "zombie: no memory lines", in: "Name:\tinjector\nState:\tZ (zombie)\n", wantErr: true},
		{name: "only VmRSS", in: "VmRSS:\t 10 kB\n", wantErr: true},
		{name: "no unit", in: "VmHWM:\t10\nVmRSS:\t10\n", wantErr: true},
		{name: "not a number", in: "VmHWM:\tlots kB\nVmRSS:\t10 kB\n", wantErr: true},
		{name: "VmRSS mentioned in another field's name is not VmRSS", in: "XVmRSS:\t1 kB\nVmHWM:\t2 kB\nVmRSS:\t3 kB\n", want: ProcStatus{RSS: 3 << 10, HWM: 2 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseProcStatus([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
