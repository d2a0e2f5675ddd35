-- wrk script for bench/intake_load.py: POST /events/ with a unique query event per request.
-- Usage: wrk -s bench/intake_load.lua <url> -- <bearer-token> <run-id>
-- done() prints one line "WRK_JSON {...}" that intake_load.py parses.

local next_thread = 0

function setup(thread)
  thread:set("tid", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  token = args[1] or "bench-token-123456789"
  run_id = args[2] or "run"
  counter = 0
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"event_id":"%s-t%d-%d","event_type":"query",'
      .. '"event_data":{"text":"How many checked bags are free on a Classic fare?","k":3}}',
    run_id, tid, counter
  )
  return wrk.format("POST", "/events/", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"min":%.0f,"mean":%.1f,"stdev":%.1f,"max":%.0f,'
      .. '"p50":%.0f,"p90":%.0f,"p99":%.0f,"p999":%.0f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)
  ))
end
