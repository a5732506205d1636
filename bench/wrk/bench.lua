-- wrk script for bench/runner.py.
-- Arguments (after `--`): path, token file ("-" for none), number of wrk threads.
-- Requests are pre-formatted in init() so wrk spends its CPU on sending, not on Lua.
-- With a token file, each request takes the next token (threads interleave: thread k
-- sends tokens k, k+T, k+2T, ...), so a list longer than the run gives every request
-- a distinct token. done() prints one "BENCH_JSON {...}" line for the runner.

local next_tid = 0
local reqs = {}
local n = 0
local i = 0
local step = 1

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

function init(args)
  local path = args[1]
  local file = args[2]
  step = tonumber(args[3] or "1")
  i = tid or 0
  if file == nil or file == "-" then
    reqs[1] = wrk.format("GET", path)
  else
    for line in io.lines(file) do
      if #line > 0 then
        reqs[#reqs + 1] = wrk.format("GET", path, { Authorization = "Bearer " .. line })
      end
    end
  end
  n = #reqs
end

function request()
  local r = reqs[(i % n) + 1]
  i = i + step
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50.0), latency:percentile(90.0),
    latency:percentile(99.0)))
end
