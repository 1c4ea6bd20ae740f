package web

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/filesystem"
)

// builtUI holds web/ui's Vite build (dist/app) when it was built before
// `go build`, and a placeholder README otherwise.
//
//go:embed all:ui/dist
var builtUI embed.FS

// plainUI is the page served when the dashboard was not built: how to build
// it, and a minimal live view (device list and one chart) that needs no
// build step.
//
//go:embed ui/plain
var plainUI embed.FS

// uiBuilt reports whether the binary carries the dashboard's build.
func uiBuilt() bool {
	_, err := fs.Stat(builtUI, "ui/dist/app/index.html")
	return err == nil
}

func (s *Server) routesUI() {
	if uiBuilt() {
		app, err := fs.Sub(builtUI, "ui/dist/app")
		if err != nil {
			panic("web: embedded dashboard: " + err.Error()) // a build error
		}
		s.app.Use("/", func(c *fiber.Ctx) error {
			if strings.HasPrefix(c.Path(), "/assets/") {
				// Vite names assets by content hash: cache them for good.
				c.Set(fiber.HeaderCacheControl, "public, max-age=31536000, immutable")
			} else {
				c.Set(fiber.HeaderCacheControl, "no-cache")
			}
			return c.Next()
		})
		s.app.Use("/", filesystem.New(filesystem.Config{Root: http.FS(app), Index: "index.html"}))
		return
	}
	sub, err := fs.Sub(plainUI, "ui/plain")
	if err != nil {
		panic("web: embedded page missing: " + err.Error()) // a build error
	}
	s.app.Use("/", filesystem.New(filesystem.Config{Root: http.FS(sub), Index: "index.html"}))
}
