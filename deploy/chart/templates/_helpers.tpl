{{/*
The name of the agent's objects: RELEASE-agent (pathtrace-agent for release pathtrace,
the kustomization's names), or fullnameOverride.
*/}}
{{- define "pathtrace.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-agent" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
The labels the pods carry and the selectors match. Fixed, whatever the release: the CLI
(`pathtrace follow --agents k8s`) lists the agents by app.kubernetes.io/name.
*/}}
{{- define "pathtrace.selectorLabels" -}}
app.kubernetes.io/name: pathtrace-agent
{{- end -}}

{{/*
Helm's standard labels, on every object's metadata (not on the pods: a new chart
version would restart every agent). deploy/chart_test.go strips exactly these four
when it compares the chart with the kustomization.
*/}}
{{- define "pathtrace.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* The agent's objects' labels. */}}
{{- define "pathtrace.labels" -}}
{{ include "pathtrace.selectorLabels" . }}
app.kubernetes.io/part-of: pathtrace
{{ include "pathtrace.helmLabels" . }}
{{- end -}}

{{- define "pathtrace.serviceAccountName" -}}
{{- default (include "pathtrace.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "pathtrace.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "pathtrace.fullname" .)) .Values.api.tls.secretName -}}
{{- end -}}

{{- define "pathtrace.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
