// Command telegauge is an IoT telemetry dashboard server: devices publish
// readings over MQTT to its embedded broker, and operators watch live charts
// in the browser. See README.md.
package main

import (
	"fmt"
	"os"

	"github.com/alecthomas/kong"
)

// cli is the command line (DESIGN.md §5).
type cli struct {
	Serve   ServeCmd   `cmd:"" help:"Run one node: MQTT broker, ingest and the web dashboard."`
	Sim     SimCmd     `cmd:"" help:"Simulate device fleets and dashboard viewers (load testing)."`
	Bench   BenchCmd   `cmd:"" help:"Run the benchmark matrix against a server and write a report."`
	Devices DevicesCmd `cmd:"" help:"Manage device credentials (MQTT username = device id, password = token)."`
	Users   UsersCmd   `cmd:"" help:"Manage operators of the dashboard and API (login name, role, API token)."`
	Version VersionCmd `cmd:"" help:"Print the version."`
}

func main() {
	var c cli
	ctx := kong.Parse(&c,
		kong.Name("telegauge"),
		kong.Description("Telegauge: MQTT sensor readings in, live dashboards out."),
		kong.UsageOnError(),
		kong.DefaultEnvars("TELEGAUGE"),
		kong.Configuration(yamlConfig),
	)
	if err := ctx.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "telegauge:", err)
		os.Exit(1)
	}
}
