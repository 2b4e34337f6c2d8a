-- wrk script: GET the notes of PROJ-1 as the sidecar's ingress sends it, each request in the next
-- installation's invocation (one id a line of the ids file).
local ids = {}
local next_id = 0

function init(args)
  for line in io.lines(args[1]) do
    ids[#ids + 1] = line
  end
  next_id = math.random(#ids)
end

function request()
  next_id = next_id % #ids + 1
  return wrk.format("GET", "/forge/api/issues/PROJ-1/notes", { ["x-forge-invocation-id"] = ids[next_id] })
end
