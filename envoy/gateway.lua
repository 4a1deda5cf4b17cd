-- The HTTP edge of the gateway, in two small steps.
--
-- Requests: only the REST/OpenAI surface is public. Native gRPC and the transcoder's implicit
-- `POST /<package>.<Service>/<Method>` paths are refused, so nothing reaches a method except
-- through its documented route.
--
-- Responses: gRPC cannot say 201, 402 or 503 with a JSON body, so the server says it in
-- metadata (`x-crosscompute-http-status`, `x-crosscompute-error-body`) and this filter, which
-- sees the response after the transcoder, applies it. gRPC's own headers never reach clients.

-- gRPC metadata keys may hold only 0-9 a-z _ . - ; HTTP allows more (& * % $ ...). A header gRPC
-- would reject is dropped here, rather than failing the whole call with an internal error.
local function drop_headers_grpc_refuses(headers)
  local refused = {}
  for name, _ in pairs(headers) do
    if string.sub(name, 1, 1) ~= ":" and not string.find(name, "^[%l%d_.%-]+$") then
      table.insert(refused, name)
    end
  end
  for _, name in ipairs(refused) do
    headers:remove(name)
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  drop_headers_grpc_refuses(headers)
  local path = headers:get(":path") or ""
  local content_type = headers:get("content-type") or ""
  if string.find(content_type, "^application/grpc") or string.find(path, "^/[%w_]+%.[%w_.]+/") then
    -- A local reply: Envoy's local_reply_config gives it the route's JSON error shape.
    handle:respond({[":status"] = "404"}, "Unknown route.")
  end
end

local GRPC_HEADERS = {
  "grpc-status", "grpc-message", "grpc-accept-encoding", "grpc-encoding", "grpc-status-details-bin",
}

function envoy_on_response(handle)
  local headers = handle:headers()
  if string.find(headers:get("content-type") or "", "^application/grpc") then
    return -- a refused native gRPC call keeps its grpc-status
  end
  local status = headers:get("x-crosscompute-http-status")
  local error_body = headers:get("x-crosscompute-error-body")
  for _, name in ipairs(GRPC_HEADERS) do
    headers:remove(name)
  end
  headers:remove("x-crosscompute-http-status")
  headers:remove("x-crosscompute-error-body")
  if status ~= nil then
    headers:replace(":status", status)
  end
  if error_body ~= nil then
    headers:replace("content-type", "application/json")
    local body = handle:body()
    if body ~= nil then
      body:setBytes(error_body)
    end
  end
end
