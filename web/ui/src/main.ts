// Entry point of the dashboard app: see src/app.
import { start } from "./app/app";

start(document.getElementById("app")!);
