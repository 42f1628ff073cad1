-- wrk script: POST WorkloadEntries with unique names and addresses (count from MESH_BENCH_START).
local counter = tonumber(os.getenv("MESH_BENCH_START") or "0")
local limit = tonumber(os.getenv("MESH_BENCH_COUNT") or "1000000000")

function request()
  if counter >= limit then
    return wrk.format("GET", "/healthz")  -- done: idle until wrk's duration ends
  end
  counter = counter + 1
  local a, b = math.floor(counter / 256) % 256, counter % 256
  local second = 18 + math.floor(counter / 65536)
  local body = string.format(
    '{"apiVersion":"networking.istio.io/v1","kind":"WorkloadEntry","metadata":{"name":"we-%d",' ..
    '"labels":{"app":"bench-%d"}},"spec":{"address":"198.%d.%d.%d","serviceAccount":"bench"}}',
    counter, counter % 100, second, a, b)
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("MESH_TOKEN")}
  return wrk.format("POST", "/apis/networking.istio.io/v1/namespaces/default/workloadentries", headers, body)
end

function response(status, headers, body)
  if status ~= 201 and status ~= 409 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
  end
end
