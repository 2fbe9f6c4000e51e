-- Argo CD health check for lockgate.dev/Application.
-- argocd-cm key: resource.customizations.health.lockgate.dev_Application
-- Mirrors status.phase (Healthy, Progressing, Degraded) once the operator has observed the
-- current generation; Progressing before that and while the phase is Unknown (no version
-- deployed yet: the Deployment usually arrives in the same sync), as kstatus reads it.
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
if phase == "Healthy" or phase == "Progressing" or phase == "Degraded" then
  hs.status = phase
elseif phase == "Unknown" then
  hs.status = "Progressing"
else
  hs.status = "Unknown"
end
hs.message = status.message or phase
if phase == "Progressing" and status.activeDeployment ~= nil then
  hs.message = "rolling out by " .. status.activeDeployment .. ": " .. hs.message
end
return hs
