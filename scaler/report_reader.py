"""The report contract's rules in Lua, for the reader's script (`scaler.store`): the sum of a
target's valid reports, computed inside Redis (`SUM_REPORTS_LUA`)."""

from __future__ import annotations

# The contract's rules again, in Lua, for the reader: the scaler sums a target's
# reports inside its read script, so a poll moves a few numbers instead of every
# report (64 pods: ~10 KB of JSON and 64 decodes in Python per call). It must
# accept exactly what `PodReport.from_json` accepts, plus the hash field naming
# the same pod; tests/test_reports.py holds the two to the same table.
# Defines sum_reports(pods, payloads) -> {inflight, waiting, capacity_ready,
# capacity_starting, pods_ready, pods_valid, invalid count, invalid pods,
# invalid payloads, longest cold_start_s reported (0: none)}.
SUM_REPORTS_LUA = """
local function is_count(x)
  return type(x) == 'number' and x == x and x >= 0 and x < math.huge
end
local function valid_report(r, pod)
  if type(r) ~= 'table' or r.pod ~= pod or type(r.ready) ~= 'boolean' then return false end
  if not (is_count(r.inflight) and is_count(r.waiting) and is_count(r.capacity)) then
    return false
  end
  if not is_count(r.started_at) then return false end
  if not (is_count(r.seq) and math.floor(r.seq) == r.seq) then return false end
  if r.cold_start_s ~= nil and not is_count(r.cold_start_s) then return false end
  local kv = r.kv_cache_utilization
  if kv ~= nil and not (type(kv) == 'number' and kv >= 0 and kv <= 1) then return false end
  return true
end
local function sum_reports(pods, payloads)
  local inflight, waiting, cap_ready, cap_starting, ready, valid = 0, 0, 0, 0, 0, 0
  local cold_start = 0
  local bad_pods, bad_payloads = {}, {}
  for i, pod in ipairs(pods) do
    local payload = payloads[i]
    local ok, r = false, nil
    if payload then ok, r = pcall(cjson.decode, payload) end
    if ok and valid_report(r, pod) then
      valid = valid + 1
      inflight = inflight + r.inflight
      waiting = waiting + r.waiting
      if r.cold_start_s ~= nil and r.cold_start_s > cold_start then cold_start = r.cold_start_s end
      if r.ready then
        ready = ready + 1
        cap_ready = cap_ready + r.capacity
      else
        cap_starting = cap_starting + r.capacity
      end
    elseif #bad_pods < 5 then  -- a few, for the log; the count says how many
      bad_pods[#bad_pods + 1] = pod
      bad_payloads[#bad_payloads + 1] = payload or ''
    end
  end
  local function f(x) return string.format('%.17g', x) end
  return {f(inflight), f(waiting), f(cap_ready), f(cap_starting), ready, valid,
          #pods - valid, bad_pods, bad_payloads, f(cold_start)}
end
"""
