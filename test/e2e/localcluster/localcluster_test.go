package localcluster

import (
	"slices"
	"strings"
	"testing"
)

func TestNthIP(t *testing.T) {
	cases := []struct {
		cidr string
		n    int
		want string
	}{
		{"10.96.0.0/16", 1, "10.96.0.1"},
		{"10.96.0.0/16", 10, "10.96.0.10"},
		{"10.96.0.0/16", 300, "10.96.1.44"},
		{"10.244.0.0/24", 255, "10.244.0.255"},
	}
	for _, c := range cases {
		got, err := nthIP(c.cidr, c.n)
		if err != nil || got.String() != c.want {
			t.Errorf("nthIP(%q, %d) = %v, %v; want %s", c.cidr, c.n, got, err, c.want)
		}
	}
	for _, bad := range []struct {
		cidr string
		n    int
		want string
	}{
		{"10.244.0.0/24", 256, "too small"},
		{"not-a-cidr", 1, `invalid CIDR "not-a-cidr"`},
		{"fd00::/64", 1, "is not IPv4"},
	} {
		if _, err := nthIP(bad.cidr, bad.n); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("nthIP(%q, %d) error = %v; want one containing %q", bad.cidr, bad.n, err, bad.want)
		}
	}
}

func TestUnquote(t *testing.T) {
	rule := strings.Fields(`FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD`)
	want := []string{"FORWARD", "-m", "comment", "--comment", "CNI firewall plugin rules", "-j", "CNI-FORWARD"}
	if got := unquote(rule); !slices.Equal(got, want) {
		t.Errorf("unquote = %q; want %q", got, want)
	}
	oneWord := strings.Fields(`OUTPUT -m comment --comment "single" -j KUBE-FIREWALL`)
	if got := unquote(oneWord); got[4] != "single" || len(got) != 7 {
		t.Errorf("unquote of a one-word comment = %q", got)
	}
}
