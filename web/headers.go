package web

import (
	"crypto/sha256"
	"encoding/base64"
	"io/fs"
	"regexp"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// builtCSP is the Content-Security-Policy of the built dashboard: Vite emits
// no inline script or style (index.html loads one module and one
// stylesheet), charts style elements through the CSSOM (which CSP does not
// restrict), and the favicon is a data: URL. connect-src 'self' covers the
// same-origin WebSocket (CSP Level 3 §6.7.2.8: 'self' matches ws: and wss:
// on the page's host). Everything else is refused, framing included.
const builtCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// plainCSP returns the policy of the unbuilt placeholder page, whose one
// page carries its script and style inline: the script is allowed by its
// hash, inline style as such (the page sets style attributes).
func plainCSP(page []byte) string {
	var hashes []string
	for _, m := range inlineScript.FindAllSubmatch(page, -1) {
		sum := sha256.Sum256(m[1])
		hashes = append(hashes, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
	}
	return "default-src 'self'; script-src 'self' " + strings.Join(hashes, " ") + "; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
		"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

// inlineScript matches an inline <script> element's text.
var inlineScript = regexp.MustCompile(`(?s)<script>(.*?)</script>`)

// contentPolicy returns the CSP for the UI this binary serves.
func contentPolicy() string {
	if uiBuilt() {
		return builtCSP
	}
	page, err := fs.ReadFile(plainUI, "ui/plain/index.html")
	if err != nil {
		panic("web: embedded page missing: " + err.Error()) // a build error
	}
	return plainCSP(page)
}

// securityHeaders sets, on every response (API answers, streams and the
// UI alike):
//   - Content-Security-Policy (contentPolicy), with frame-ancestors 'none'
//     and X-Frame-Options: DENY for browsers without CSP: no clickjacking;
//   - X-Content-Type-Options: nosniff: a JSON answer is never run as script;
//   - Referrer-Policy: same-origin: dashboard URLs (device and board names)
//     do not leak to other sites, and our own requests keep the Referer the
//     CSRF check may fall back on;
//   - Cross-Origin-Opener-Policy: same-origin;
//   - Strict-Transport-Security, when this listener speaks HTTPS.
func (s *Server) securityHeaders(c *fiber.Ctx) error {
	h := &c.Response().Header
	h.Set(fiber.HeaderContentSecurityPolicy, s.csp)
	h.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	h.Set(fiber.HeaderReferrerPolicy, "same-origin")
	h.Set(fiber.HeaderXFrameOptions, "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if s.cfg.TLS != nil {
		h.Set(fiber.HeaderStrictTransportSecurity, "max-age=31536000")
	}
	return c.Next()
}
