-- wrk script: POST a new Pod per request, with names unique per thread and request.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  thread_id = id
  prefix = args[1] or "bench"
end

function request()
  counter = counter + 1
  local name = string.format("%s-%d-%d", prefix, thread_id, counter)
  local body = '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"' .. name ..
    '","labels":{"app":"bench"}},"spec":{"containers":[{"name":"c","image":"busybox","command":["sleep","1d"]}]}}'
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("MESH_TOKEN")}
  return wrk.format("POST", "/api/v1/namespaces/default/pods", headers, body)
end

function response(status, headers, body)
  if status ~= 201 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
  end
end
