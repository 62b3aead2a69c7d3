package proxy

import (
	"fmt"
	"net/http"
	"reflect"
)

// authz is a compiled list of allow rules, never changed once made.
type authz struct {
	rules []compiledRule
}

type compiledRule struct {
	any  bool
	from map[string]bool
	mux  *http.ServeMux
}

// compileRules compiles checked rules; no rules allow every service.
func compileRules(rules []AllowRule) (a *authz, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("proxy: allow rules: %v", p)
		}
	}()
	a = &authz{}
	for _, r := range rules {
		cr := compiledRule{from: map[string]bool{}, mux: http.NewServeMux()}
		for _, f := range r.From {
			if f == AnyService {
				cr.any = true
			}
			cr.from[f] = true
		}
		for _, pat := range r.Routes {
			cr.mux.Handle(pat, allowed{})
		}
		a.rules = append(a.rules, cr)
	}
	return a, nil
}

// allow reports whether peer may make the request r, and the pattern that
// allows it ("*" when there are no rules), a bounded label for metrics.
// A path that is not in its clean form (with .. or //) matches no
// pattern: ServeMux would redirect it, and the proxy refuses it.
func (a *authz) allow(peer string, r *http.Request) (string, bool) {
	if len(a.rules) == 0 {
		return "*", true
	}
	for _, rule := range a.rules {
		if !rule.any && !rule.from[peer] {
			continue
		}
		// Only the handler registered means a match: ServeMux answers an
		// unclean path, or /tree for /tree/, with a redirect whose pattern
		// is that of another path than the one the application would get.
		if h, pat := rule.mux.Handler(r); pat != "" {
			if _, ok := h.(allowed); ok {
				return pat, true
			}
		}
	}
	return "", false
}

// allowed is the handler of every pattern of a rule: finding it, and not
// a redirect or a 405, is what allows a request.
type allowed struct{}

func (allowed) ServeHTTP(http.ResponseWriter, *http.Request) {}

// equalConfig reports whether two configs are the same.
func equalConfig(a, b *Config) bool { return reflect.DeepEqual(a, b) }
