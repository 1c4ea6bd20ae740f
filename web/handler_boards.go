package web

import (
	"encoding/json"

	"github.com/gofiber/fiber/v2"

	"github.com/telegauge/telegauge/dashboard"
)

// maxBoardBytes caps a saved dashboard's JSON body.
const maxBoardBytes = 64 << 10

// boardBody is what clients send to create or replace a board.
type boardBody struct {
	Name   string            `json:"name"`
	Panels []dashboard.Panel `json:"panels"`
}

// handleBoardsList serves GET /api/v1/dashboards.
func (s *Server) handleBoardsList(c *fiber.Ctx) error {
	list, err := s.cfg.Boards.List(c.UserContext())
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"dashboards": list})
}

// handleBoardCreate serves POST /api/v1/dashboards.
func (s *Server) handleBoardCreate(c *fiber.Ctx) error {
	b, err := s.boardFromBody(c)
	if err != nil {
		return err
	}
	b.ID = dashboard.NewBoardID()
	if err := s.cfg.Boards.Put(c.UserContext(), b); err != nil {
		return err
	}
	c.Location("/api/v1/dashboards/" + b.ID)
	return c.Status(fiber.StatusCreated).JSON(b)
}

// handleBoardGet serves GET /api/v1/dashboards/{id}.
func (s *Server) handleBoardGet(c *fiber.Ctx) error {
	id, err := boardID(c)
	if err != nil {
		return err
	}
	b, err := s.cfg.Boards.Get(c.UserContext(), id)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(b)
}

// handleBoardPut serves PUT /api/v1/dashboards/{id}: replace an existing
// board.
func (s *Server) handleBoardPut(c *fiber.Ctx) error {
	id, err := boardID(c)
	if err != nil {
		return err
	}
	b, err := s.boardFromBody(c)
	if err != nil {
		return err
	}
	if _, err := s.cfg.Boards.Get(c.UserContext(), id); err != nil {
		return err
	}
	b.ID = id
	if err := s.cfg.Boards.Put(c.UserContext(), b); err != nil {
		return err
	}
	return c.JSON(b)
}

// handleBoardDelete serves DELETE /api/v1/dashboards/{id}.
func (s *Server) handleBoardDelete(c *fiber.Ctx) error {
	id, err := boardID(c)
	if err != nil {
		return err
	}
	if err := s.cfg.Boards.Delete(c.UserContext(), id); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func boardID(c *fiber.Ctx) (string, error) {
	id := c.Params("id")
	if !dashboard.ValidBoardID(id) {
		return "", dashboard.Errorf(dashboard.CodeNotFound, "no dashboard %.40q", id)
	}
	return id, nil
}

// boardFromBody decodes and validates a board from the request body.
func (s *Server) boardFromBody(c *fiber.Ctx) (dashboard.Board, error) {
	body := c.Body()
	if len(body) > maxBoardBytes {
		return dashboard.Board{}, dashboard.Errorf(dashboard.CodeTooLarge, "dashboard too large (limit %d bytes)", maxBoardBytes)
	}
	var in boardBody
	if err := json.Unmarshal(body, &in); err != nil {
		return dashboard.Board{}, dashboard.Errorf(dashboard.CodeInvalid, "body must be a JSON dashboard: {\"name\": ..., \"panels\": [...]}")
	}
	b, err := dashboard.NormalizeBoard(dashboard.Board{Name: in.Name, Panels: in.Panels})
	if err != nil {
		return dashboard.Board{}, err
	}
	b.Updated = s.cfg.Hub.Clock().Now().UnixMilli()
	return b, nil
}
