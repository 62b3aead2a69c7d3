package service

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// PreferWait returns how long a request asks the server to wait for a
// result before answering, with the header Prefer: wait=<seconds>
// (RFC 7240), capped at limit; ok is false when it asks for no wait. As
// RFC 7240 requires, a preference the server does not understand (a value
// that is not a whole number of seconds) is ignored, not refused. A
// handler that honours it should call AppliedWait.
func PreferWait(r *http.Request, limit time.Duration) (d time.Duration, ok bool) {
	for _, h := range r.Header.Values("Prefer") {
		for pref := range strings.SplitSeq(h, ",") {
			// A preference's parameters follow ";".
			pref, _, _ = strings.Cut(pref, ";")
			name, value, found := strings.Cut(strings.TrimSpace(pref), "=")
			if !found || !strings.EqualFold(strings.TrimSpace(name), "wait") {
				continue
			}
			secs, err := strconv.ParseUint(strings.Trim(strings.TrimSpace(value), `"`), 10, 32)
			if err != nil {
				continue
			}
			d := time.Duration(secs) * time.Second
			if d > limit {
				d = limit
			}
			return d, true
		}
	}
	return 0, false
}

// AppliedWait tells the client that the server honoured its wait
// preference, d (whole seconds), with the header Preference-Applied, and
// that the answer depends on Prefer (Vary).
func AppliedWait(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Preference-Applied", "wait="+strconv.FormatInt(int64(d/time.Second), 10))
	w.Header().Add("Vary", "Prefer")
}
