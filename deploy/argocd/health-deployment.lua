-- Argo CD health check for lockgate.dev/Deployment (a rollout).
-- argocd-cm key: resource.customizations.health.lockgate.dev_Deployment
-- Healthy once the rollout Succeeded; Suspended while it is paused (a manual promote or
-- spec.paused); Degraded when it rolled back, failed or was aborted; Progressing otherwise,
-- including until the operator has observed the current generation.
local hs = {status = "Progressing", message = "waiting for the lockgate operator"}
if obj.status == nil or obj.status.phase == nil then
  return hs
end
local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "waiting for the lockgate operator to observe generation " .. tostring(generation)
  return hs
end
local phase = status.phase
local message = status.message or phase
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Paused" then
  hs.status = "Suspended"
elseif phase == "RolledBack" or phase == "Failed" or phase == "Aborted" then
  hs.status = "Degraded"
elseif phase == "Pending" or phase == "Queued" or phase == "Progressing" or phase == "RollingBack" then
  hs.status = "Progressing"
else
  hs.status = "Unknown"
end
local step = status.step
if hs.status ~= "Healthy" and step ~= nil and step.total ~= nil and step.total > 0 and step.description ~= nil then
  message = phase .. " at step " .. tostring((step.index or 0) + 1) .. "/" .. tostring(step.total) ..
    " (" .. step.description .. "): " .. message
end
hs.message = message
return hs
