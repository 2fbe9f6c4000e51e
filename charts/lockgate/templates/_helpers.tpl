{{/* Names and labels shared by every template. */}}

{{- define "lockgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lockgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lockgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lockgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lockgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "lockgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lockgate
{{- end }}

{{/* The shard this release's operator serves ("" the default shard), checked as the
operator checks `--shard`; and its Lease, one per shard (operators of two shards sharing one
would take turns instead of acting side by side). */}}
{{- define "lockgate.shard" -}}
{{- $shard := .Values.shard | default "" | toString }}
{{- if and $shard (not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" $shard)) }}
{{- fail (printf "shard %q is not a shard name: it must be the value of the label lockgate.dev/shard and a DNS label (at most 63 characters: lowercase letters, digits and '-', starting and ending with a letter or digit)" $shard) }}
{{- end }}
{{- $shard }}
{{- end }}

{{- define "lockgate.leaseName" -}}
{{- $shard := include "lockgate.shard" . }}
{{- if $shard }}{{ printf "%s-%s" .Values.leaderElection.leaseName $shard }}{{ else }}{{ .Values.leaderElection.leaseName }}{{ end }}
{{- end }}

{{- define "lockgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lockgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lockgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The rules the operator needs in every namespace it watches. Each one is traced to the code:
  lockgate.dev applications, deployments: kopf lists and watches them and patches its
    finalizer and progress annotations; the reconciler patches Deployments (action and
    superseded-by annotations) and reads Applications.
  .../status: kopf and the reconciler write status.
  apps deployments: the two slots <app>-a/-b, read, watched (what a round observes of them)
    and server-side applied (create + patch);
    deployments/scale: scaled through the scale subresource.
  services: <app>-stable/-canary, read and server-side applied.
  pods: listed and watched to tell ready instances (their changes wake the rollouts).
  metrics.k8s.io pods: listed for canary and stable CPU and memory (analysis.maxCpuIncrease,
    maxMemoryIncrease).
  events: kopf posts Events for the handlers and lockgate's own.
  traefik.io traefikservices, ingressroutes: read, watched (lockgate's own, by the label
    lockgate.dev/application: what a round reads of them) and server-side applied.
  gateway.networking.k8s.io httproutes (spec.traffic.gatewayAPI): read; lockgate's own
    server-side applied, a rule of someone else's merge-patched.
  Both: listed by the label lockgate.dev/application and deleted when the Application owns them and
    its router no longer does (moved between a TraefikService and an HTTPRoute, renamed).
The leader election's Lease has a Role of its own in the release namespace (rbac.yaml).
*/}}
{{- define "lockgate.namespacedRules" -}}
- apiGroups: [lockgate.dev]
  resources: [applications, deployments]
  verbs: [get, list, watch, patch]
- apiGroups: [lockgate.dev]
  resources: [applications/status, deployments/status]
  verbs: [get, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [metrics.k8s.io]
  resources: [pods]
  verbs: [list]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [traefik.io]
  resources: [traefikservices, ingressroutes]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, create, patch, delete]
{{- if .Values.rbac.readSecrets }}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- end }}
