import { defineConfig } from "vitest/config";

// The build goes to dist/app, which the Go binary embeds (web/ui.go); dist
// itself holds a committed placeholder so that a Go build works without
// Node. `npm run dev` proxies the API to a server on :8080.
export default defineConfig({
  base: "./",
  build: {
    outDir: "dist/app",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    chunkSizeWarningLimit: 600,
  },
  server: {
    proxy: {
      "/api": { target: "http://127.0.0.1:8080", ws: true },
    },
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
