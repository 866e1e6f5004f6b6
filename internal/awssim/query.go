package awssim

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// formList returns the values of prefix.1, prefix.2, … in index order.
func formList(form url.Values, prefix string) []string {
	type kv struct {
		n int
		v string
	}
	var items []kv
	for k, v := range form {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok || len(v) == 0 {
			continue
		}
		if n, err := strconv.Atoi(rest); err == nil {
			items = append(items, kv{n, v[0]})
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].n < items[j].n })
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.v
	}
	return out
}

// formStructs returns the members of a list of structures, prefix.N.Field…,
// each as its own url.Values keyed by the part after prefix.N.
func formStructs(form url.Values, prefix string) []url.Values {
	groups := map[int]url.Values{}
	for k, v := range form {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok {
			continue
		}
		ns, field, ok := strings.Cut(rest, ".")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(ns)
		if err != nil {
			continue
		}
		if groups[n] == nil {
			groups[n] = url.Values{}
		}
		groups[n][field] = v
	}
	idx := make([]int, 0, len(groups))
	for n := range groups {
		idx = append(idx, n)
	}
	sort.Ints(idx)
	out := make([]url.Values, len(idx))
	for i, n := range idx {
		out[i] = groups[n]
	}
	return out
}

// filter is one EC2 Filter.N.
type filter struct {
	name   string
	values []string
}

func formFilters(form url.Values) []filter {
	var out []filter
	for _, g := range formStructs(form, "Filter") {
		out = append(out, filter{name: g.Get("Name"), values: formList(g, "Value")})
	}
	return out
}

// matchFilters reports whether a resource passes every filter; get returns
// the resource's values for a filter name (nil when it has none). Values may
// use the * and ? wildcards.
func matchFilters(filters []filter, get func(name string) []string) bool {
	for _, f := range filters {
		have := get(f.name)
		ok := false
		for _, want := range f.values {
			for _, h := range have {
				if wildcardMatch(want, h) {
					ok = true
				}
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// matchTagged is matchFilters for a tagged resource: tag:K, tag-key and
// tag-value filters are answered from tags, every other name by get.
func matchTagged(filters []filter, tags map[string]string, get func(name string) []string) bool {
	return matchFilters(filters, func(name string) []string {
		if vs, ok := tagFilterValues(name, tags); ok {
			return vs
		}
		return get(name)
	})
}

// tagFilterValues answers tag:K, tag-key and tag-value filters from tags.
func tagFilterValues(name string, tags map[string]string) ([]string, bool) {
	switch {
	case strings.HasPrefix(name, "tag:"):
		if v, ok := tags[strings.TrimPrefix(name, "tag:")]; ok {
			return []string{v}, true
		}
		return nil, true
	case name == "tag-key":
		return sortedKeys(tags), true
	case name == "tag-value":
		var vs []string
		for _, k := range sortedKeys(tags) {
			vs = append(vs, tags[k])
		}
		return vs, true
	}
	return nil, false
}

// formTagSpecs returns the tags TagSpecification.N gives resourceType.
func formTagSpecs(form url.Values, resourceType string) map[string]string {
	tags := map[string]string{}
	for _, spec := range formStructs(form, "TagSpecification") {
		if spec.Get("ResourceType") != resourceType {
			continue
		}
		for _, t := range formStructs(spec, "Tag") {
			tags[t.Get("Key")] = t.Get("Value")
		}
	}
	return tags
}

func formBool(form url.Values, key string) bool {
	b, _ := strconv.ParseBool(form.Get(key))
	return b
}

// ec2Time formats a timestamp as EC2 does.
func ec2Time(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

func xmlTags(tags map[string]string) []xmlTag {
	var out []xmlTag
	for _, k := range sortedKeys(tags) {
		out = append(out, xmlTag{k, tags[k]})
	}
	return out
}

// wildcardMatch reports whether s matches an EC2 filter value: * matches
// any run of characters ("/" included, unlike path.Match), ? any one, and a
// backslash makes the next character literal (a trailing one is itself).
func wildcardMatch(pattern, s string) bool {
	p, t := []rune(pattern), []rune(s)
	// star is the pattern position after the last *, and mark the text
	// position it matched up to: on a mismatch, the * takes one more rune.
	star, mark := -1, 0
	i, j := 0, 0
	for j < len(t) {
		switch {
		case i < len(p) && p[i] == '*':
			star, mark = i+1, j
			i++
		case i+1 < len(p) && p[i] == '\\' && p[i+1] == t[j]:
			i, j = i+2, j+1
		case i < len(p) && !(i+1 < len(p) && p[i] == '\\') && (p[i] == '?' || p[i] == t[j]):
			// (a trailing backslash is a literal one)
			i, j = i+1, j+1
		case star >= 0:
			mark++
			i, j = star, mark
		default:
			return false
		}
	}
	for i < len(p) && p[i] == '*' {
		i++
	}
	return i == len(p)
}

// checkFilters refuses a filter name the operation does not know, as EC2
// does (InvalidParameterValue), so that a mistyped filter fails here as it
// would on AWS instead of silently matching nothing; tagged accepts tag:K,
// tag-key and tag-value too.
func checkFilters(filters []filter, tagged bool, names ...string) error {
	for _, f := range filters {
		if tagged && (strings.HasPrefix(f.name, "tag:") || f.name == "tag-key" || f.name == "tag-value") {
			continue
		}
		if !slices.Contains(names, f.name) {
			return errf(http.StatusBadRequest, "InvalidParameterValue", "The filter '%s' is invalid", f.name)
		}
	}
	return nil
}
