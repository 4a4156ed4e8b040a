package upgrade

import (
	"testing"
	"time"
)

func TestParseWindow(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "02:00-04:00", want: "02:00-04:00"},
		{in: " 22:30-01:15 ", want: "22:30-01:15"},
		{in: "2:00-4:00", want: "02:00-04:00"},
		{in: "02:00", wantErr: true},
		{in: "02:00-02:00", wantErr: true},
		{in: "25:00-04:00", wantErr: true},
		{in: "02:00-04:60", wantErr: true},
		{in: "noon-night", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			w, err := ParseWindow(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseWindow(%q) = %v, want an error", tt.in, w)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if w.String() != tt.want {
				t.Errorf("String() = %q, want %q", w.String(), tt.want)
			}
		})
	}
}

func TestWindowContains(t *testing.T) {
	at := func(hhmm string) time.Time {
		c, err := time.Parse("15:04", hhmm)
		if err != nil {
			t.Fatal(err)
		}
		return time.Date(2030, 1, 2, c.Hour(), c.Minute(), 0, 0, time.UTC)
	}
	day, err := ParseWindow("02:00-04:00")
	if err != nil {
		t.Fatal(err)
	}
	night, err := ParseWindow("22:00-01:00")
	if err != nil {
		t.Fatal(err)
	}
	paris := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		w    *Window
		t    time.Time
		in   bool
		next time.Duration
	}{
		{"before", day, at("01:59"), false, time.Minute},
		{"start included", day, at("02:00"), true, 0},
		{"inside", day, at("03:30"), true, 0},
		{"end excluded", day, at("04:00"), false, 22 * time.Hour},
		{"other time zone, same instant", day, at("03:00").In(paris), true, 0},
		{"across midnight, evening", night, at("23:00"), true, 0},
		{"across midnight, morning", night, at("00:30"), true, 0},
		{"across midnight, outside", night, at("12:00"), false, 10 * time.Hour},
		{"no window", nil, at("12:00"), true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.w.Contains(tt.t); got != tt.in {
				t.Errorf("Contains(%s) = %v, want %v", tt.t, got, tt.in)
			}
			if got := tt.w.Next(tt.t); got != tt.next {
				t.Errorf("Next(%s) = %s, want %s", tt.t, got, tt.next)
			}
		})
	}
}
