package isolate

import "testing"

func TestStateIsolated(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   State
		want bool
	}{
		{"never run", State{}, false},
		{"isolated", State{History: []RunEntry{{Action: "isolate", Result: "isolated"}}}, true},
		{"partial", State{History: []RunEntry{{Action: "isolate", Result: "partial"}}}, false},
		{"isolated, then a partial re-run", State{History: []RunEntry{{Action: "isolate", Result: "isolated"}, {Action: "isolate", Result: "partial"}}}, false},
		{"partial, then completed", State{History: []RunEntry{{Action: "isolate", Result: "partial"}, {Action: "isolate", Result: "isolated"}}}, true},
		{"released", State{Released: true, History: []RunEntry{{Action: "isolate", Result: "isolated"}, {Action: "release", Result: "released"}}}, false},
	} {
		if got := tc.st.Isolated(); got != tc.want {
			t.Errorf("%s: Isolated() = %v, want %v", tc.name, got, tc.want)
		}
	}
}
