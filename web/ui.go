package web

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/gofiber/fiber/v2/middleware/filesystem"
)

// plainUI is the first dashboard page: plain HTML and JavaScript with no
// build step.
//
//go:embed ui/plain
var plainUI embed.FS

func (s *Server) routesUI() {
	sub, err := fs.Sub(plainUI, "ui/plain")
	if err != nil {
		panic("web: embedded UI missing: " + err.Error()) // a build error, not a runtime one
	}
	s.app.Use("/", filesystem.New(filesystem.Config{
		Root:   http.FS(sub),
		Index:  "index.html",
		MaxAge: 0,
	}))
}
