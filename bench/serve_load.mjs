// Load test for `lcm serve` on loopback: starts the server on a model (the tiny fixture by
// default), runs CLIENTS concurrent clients posting /sdapi/v1/txt2img for SECONDS, samples the
// server's RSS every second, then stops the server with SIGTERM. Bounded: it ends by itself.
//
//   node bench/serve_load.mjs [--lcm build/lcm] [--model DIR] [--clients 200] [--seconds 60]
//                             [--queue 16] [--threads 2]
//
// Passes (exit 0) when the server never crashed and exited 0 on SIGTERM, and every request was
// answered with an image (200 + PNG) or 429 (with Retry-After). Prints a summary for BENCHMARKS.md.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import http from "node:http";

const opts = { lcm: "build/lcm", model: (process.env.LCM_FIXTURES || "../shared/fixtures") + "/tiny-lcm",
  clients: 200, seconds: 60, queue: 16, threads: 2 };
for (let i = 2; i + 1 < process.argv.length; i += 2) opts[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const clients = Number(opts.clients), seconds = Number(opts.seconds);

const server = spawn(opts.lcm, ["serve", "--model", opts.model, "--port", "0", "--queue", String(opts.queue),
  "--threads", String(opts.threads)], { stdio: ["ignore", "pipe", "pipe"] });
let serverLog = "";
server.stderr.on("data", (d) => { serverLog = (serverLog + d).slice(-4000); });
let exited = null;
const exitPromise = new Promise((resolve) => server.on("exit", (code, signal) => { exited = { code, signal }; resolve(); }));
const port = await new Promise((resolve, reject) => {
  let out = "";
  server.stdout.on("data", (d) => {
    out += d;
    const m = out.match(/http:\/\/127\.0\.0\.1:(\d+)\//);
    if (m) resolve(Number(m[1]));
  });
  server.on("exit", () => reject(new Error("server exited before listening:\n" + serverLog)));
});

const agent = new http.Agent({ keepAlive: true, maxSockets: clients });
function post(path, body) {
  return new Promise((resolve) => {
    const started = performance.now();
    const req = http.request({ host: "127.0.0.1", port, path, method: "POST", agent,
      headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) } }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, retryAfter: res.headers["retry-after"],
        body: Buffer.concat(chunks).toString(), ms: performance.now() - started }));
      res.on("error", (e) => resolve({ status: 0, error: e.message }));
    });
    req.on("error", (e) => resolve({ status: 0, error: e.message }));
    req.end(body);
  });
}

function rssMiB() {
  try {
    const m = readFileSync(`/proc/${server.pid}/status`, "utf8").match(/VmRSS:\s+(\d+) kB/);
    return m ? Number(m[1]) / 1024 : null;
  } catch { return null; }
}

// Watchdog: in-flight requests may drain for a while after the deadline, but never forever.
const watchdog = setTimeout(() => {
  console.log("FAIL: still running " + (seconds + 300) + " s after the start\n" + serverLog);
  server.kill("SIGKILL");
  process.exit(1);
}, (seconds + 300) * 1000);
const rss = [];
const sampler = setInterval(() => {
  const r = rssMiB();
  if (r !== null) rss.push(r);
  if (process.env.LOAD_VERBOSE) console.error(JSON.stringify(counts), r);
}, 1000);
const counts = { image: 0, busy: 0, busyWithoutRetryAfter: 0, other: 0, network: 0 };
const otherExamples = [];
const latencies = [];
const deadline = performance.now() + seconds * 1000;
const body = JSON.stringify({ prompt: "a lighthouse at dusk", steps: 2 });

async function client(id) {
  while (performance.now() < deadline && exited === null) {
    const r = await post("/sdapi/v1/txt2img", body);
    if (r.status === 200 && /^\{"images":\["iVBOR/.test(r.body)) { counts.image++; latencies.push(r.ms); }
    else if (r.status === 429) {
      counts.busy++;
      if (!(Number(r.retryAfter) >= 1)) counts.busyWithoutRetryAfter++;
      await new Promise((res) => setTimeout(res, 50 + ((id * 37) % 200))); // back off a little
    } else if (r.status === 0) { counts.network++; if (otherExamples.length < 5) otherExamples.push(r.error); }
    else { counts.other++; if (otherExamples.length < 5) otherExamples.push(`${r.status} ${r.body.slice(0, 120)}`); }
  }
}
const t0 = performance.now();
await Promise.all(Array.from({ length: clients }, (_, i) => client(i)));
const wall = (performance.now() - t0) / 1000;
clearInterval(sampler);
agent.destroy();
const crashedDuringRun = exited !== null;
server.kill("SIGTERM");
await Promise.race([exitPromise, new Promise((r) => setTimeout(r, 30000))]);

latencies.sort((a, b) => a - b);
const pct = (p) => latencies.length ? Math.round(latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]) : null;
const firstTen = rss.slice(0, 10), lastTen = rss.slice(-10);
const summary = {
  clients, seconds: Math.round(wall), requests: counts.image + counts.busy + counts.other + counts.network,
  images: counts.image, answered_429: counts.busy, busy_without_retry_after: counts.busyWithoutRetryAfter,
  other_status: counts.other, network_errors: counts.network, images_per_second: +(counts.image / wall).toFixed(2),
  latency_ms_p50: pct(0.5), latency_ms_p95: pct(0.95), latency_ms_max: pct(1),
  rss_mib_start: rss.length ? +rss[0].toFixed(1) : null, rss_mib_max_first_10s: firstTen.length ? +Math.max(...firstTen).toFixed(1) : null,
  rss_mib_max_last_10s: lastTen.length ? +Math.max(...lastTen).toFixed(1) : null, rss_mib_max: rss.length ? +Math.max(...rss).toFixed(1) : null,
  server_exit: exited, crashed_during_run: crashedDuringRun,
};
console.log(JSON.stringify(summary, null, 2));
if (otherExamples.length) console.log("examples of other answers:", otherExamples);
const ok = !crashedDuringRun && exited && exited.code === 0 && counts.other === 0 && counts.network === 0 &&
  counts.busyWithoutRetryAfter === 0 && counts.image > 0;
console.log(ok ? "PASS" : "FAIL\n" + serverLog);
clearTimeout(watchdog);
process.exit(ok ? 0 : 1);
