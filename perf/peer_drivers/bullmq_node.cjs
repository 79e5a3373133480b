// BullMQ on Node.js for peers.py. `node bullmq_node.cjs worker` runs one Worker until SIGTERM;
// `node bullmq_node.cjs produce` is the producer, speaking produce.py's stdin/stdout protocol.
// The task body is the same as perf/peer_drivers/_body.py: count, and append one 16-byte record
// (wall-clock time, latency or NaN) to $SHIM_PEERS_STATS/<worker id>.rec.
"use strict";
const fs = require("fs");
const path = require("path");
const readline = require("readline");
const { Queue, Worker } = require("bullmq");

const URL_ = process.env.SHIM_PEERS_URL || "redis://127.0.0.1:6379/0";
const QUEUE = process.env.SHIM_PEERS_QUEUE || "shimperf";
const CONCURRENCY = Number(process.env.SHIM_PEERS_CONCURRENCY || "1");
const STATS = process.env.SHIM_PEERS_STATS;
const NAME = process.env.SHIM_PEERS_WORKER || String(process.pid);

function connection() {
  const url = new URL(URL_);
  const db = Number(url.pathname.replace("/", "") || "0");
  return { host: url.hostname, port: Number(url.port || "6379"), db, maxRetriesPerRequest: null };
}

const now = () => (performance.timeOrigin + performance.now()) / 1000;
let count = 0;
let fd = null;
const record = Buffer.alloc(16);

function bump(sent) {
  const t = now();
  count += 1;
  if (fd === null) fd = fs.openSync(path.join(STATS, `${NAME}.rec`), "a");
  record.writeDoubleLE(t, 0);
  record.writeDoubleLE(sent ? t - sent : NaN, 8);
  fs.writeSync(fd, record);
  return count;
}

function worker() {
  const w = new Worker(QUEUE, async (job) => bump(job.data.sent), {
    connection: connection(),
    concurrency: CONCURRENCY,
  });
  const stop = async () => {
    await w.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

const sleep = (s) => new Promise((resolve) => setTimeout(resolve, Math.max(0, s * 1000)));

async function produce() {
  const queue = new Queue(QUEUE, { connection: connection() });
  const send = (sent) => queue.add("bump", { sent });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const words = line.trim().split(/\s+/);
    let answer;
    if (!words[0] || words[0] === "quit") break;
    if (words[0] === "hello") {
      const pkg = require("bullmq/package.json");
      answer = { version: pkg.version, redis: require("ioredis/package.json").version, hiredis: null };
    } else if (words[0] === "warmup") {
      const wanted = words[1].split(",");
      let sent = 0;
      while (!wanted.every((w) => fs.existsSync(path.join(STATS, `${w}.rec`)))) {
        for (let i = 0; i < wanted.length; i++) {
          await send(null);
          sent += 1;
        }
        await sleep(0.2);
      }
      answer = { sent };
    } else if (words[0] === "enqueue") {
      const n = Number(words[1]);
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await send(null);
      answer = { seconds: (performance.now() - t0) / 1000 };
    } else if (words[0] === "latency") {
      const n = Number(words[1]);
      const interval = Number(words[2]);
      const start = performance.now() / 1000 + interval;
      for (let i = 0; i < n; i++) {
        await sleep(start + i * interval - performance.now() / 1000);
        await send(now());
      }
      answer = { sent: n };
    } else {
      answer = { error: `unknown command ${words[0]}` };
    }
    process.stdout.write(JSON.stringify(answer) + "\n");
  }
  await queue.close();
  process.exit(0);
}

if (process.argv[2] === "worker") worker();
else produce();
