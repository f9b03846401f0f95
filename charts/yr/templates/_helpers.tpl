{{/* Chart name, overridable. */}}
{{- define "yr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, prefixed with the chart name unless the release
name already contains it. Kept to 50 characters so "-operator-discovery" still fits in 63.
*/}}
{{- define "yr.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "yr.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "yr.labels" -}}
helm.sh/chart: {{ include "yr.chart" . }}
app.kubernetes.io/name: {{ include "yr.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: yr
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "yr.selectorLabels" -}}
app.kubernetes.io/name: {{ include "yr.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image operator, gateway and (by default) instances run. */}}
{{- define "yr.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "yr.instanceImage" -}}
{{- default (include "yr.image" .) .Values.instance.image }}
{{- end }}

{{- define "yr.operatorServiceAccount" -}}
{{- printf "%s-operator" (include "yr.fullname" .) }}
{{- end }}

{{- define "yr.gatewayServiceAccount" -}}
{{- printf "%s-gateway" (include "yr.fullname" .) }}
{{- end }}

{{/*
Namespaces where instance pods run and so need their ServiceAccount, Role and NetworkPolicy:
instance.namespaces, else watchNamespaces, else the release namespace. Rendered as a JSON list;
use with `include "yr.instanceNamespaces" . | fromJsonArray`.
*/}}
{{- define "yr.instanceNamespaces" -}}
{{- $ns := .Values.instance.namespaces | default .Values.watchNamespaces | default (list .Release.Namespace) }}
{{- $ns | uniq | toJson }}
{{- end }}

{{/*
Pod- and container-level security settings shared by every pod the chart runs; the operator
gives instance pods the same (docs/kubernetes-contract.md). uid 10001 is the image's user.
*/}}
{{- define "yr.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "yr.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
What the operator may do in a namespace it watches. Exactly this, and tests/test_chart.py
asserts it: no secrets (pods reference the payload Secret by name, which needs no read right).
*/}}
{{- define "yr.operatorNamespacedRules" -}}
# delete: only an instance that ended itself with yr.exit(), once its status says so.
- apiGroups: [yr.dev]
  resources: [yrinstances]
  verbs: [get, list, watch, patch, update, delete]
- apiGroups: [yr.dev]
  resources: [yrinstances/status]
  verbs: [get, patch, update]
# Pods carry blockOwnerDeletion on their YRInstance owner (foreground deletion waits for
# them); clusters that enforce owner-reference permissions require this right for it.
- apiGroups: [yr.dev]
  resources: [yrinstances/finalizers]
  verbs: [update]
# Resource groups: the operator reserves their bundles with placeholder pods (owned by the
# group, hence the finalizers right) and writes their status.
- apiGroups: [yr.dev]
  resources: [yrresourcegroups]
  verbs: [get, list, watch, patch, update]
- apiGroups: [yr.dev]
  resources: [yrresourcegroups/status]
  verbs: [get, patch, update]
- apiGroups: [yr.dev]
  resources: [yrresourcegroups/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete]
# A dead pod's last lines are read before it is deleted (status.lastTermination.output).
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
# A started pod is added as an owner of its payload Secret (a JSON Patch that first tests the
# YRInstance owns it), so that the Secret outlives the pod; never read: no get, list or watch.
- apiGroups: [""]
  resources: [secrets]
  verbs: [patch]
# Driver Leases own top-level instances; the operator deletes the expired ones.
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, delete]
# kopf posts Events in the core group; newer client code uses events.k8s.io. The reconcile
# lists a pod's Warning Events when the kubelet keeps it ContainerCreating (e.g. FailedMount).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch, list]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
