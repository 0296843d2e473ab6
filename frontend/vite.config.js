import { defineConfig } from "vite";

// The build goes into the Python package, where `geolatent serve` serves it (no CDN, no
// internet at run time).
export default defineConfig({
  build: {
    outDir: "../geolatent/app/static",
    emptyOutDir: true,
    assetsDir: "assets",
    chunkSizeWarningLimit: 2000,
  },
});
