{{/* The chart name, or nameOverride. */}}
{{- define "callvault.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else the release name (when it already
contains the chart name), else <release>-<chart>. Kept to 48 characters so that suffixes such as
"-operator" still fit in 63.
*/}}
{{- define "callvault.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "callvault.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels (app.kubernetes.io/*) on every object. */}}
{{- define "callvault.labels" -}}
helm.sh/chart: {{ include "callvault.chart" . }}
{{ include "callvault.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: callvault
{{- end }}

{{/* Labels that select this release's pods (stable across upgrades). */}}
{{- define "callvault.selectorLabels" -}}
app.kubernetes.io/name: {{ include "callvault.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "callvault.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "callvault.operator.fullname" -}}
{{- printf "%s-operator" (include "callvault.fullname" .) }}
{{- end }}

{{- define "callvault.portal.fullname" -}}
{{- printf "%s-portal" (include "callvault.fullname" .) }}
{{- end }}

{{- define "callvault.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "callvault.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "callvault.portal.serviceAccountName" -}}
{{- if .Values.portal.serviceAccount.create }}
{{- default (include "callvault.portal.fullname" .) .Values.portal.serviceAccount.name }}
{{- else }}
{{- required "portal.serviceAccount.name is required when portal.serviceAccount.create is false" .Values.portal.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The watched namespaces, comma-separated; empty means every namespace. */}}
{{- define "callvault.watchNamespaces" -}}
{{- join "," .Values.watchNamespaces }}
{{- end }}

{{/* Environment shared by every workload. */}}
{{- define "callvault.commonEnv" -}}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
- name: CALLVAULT_WATCH_NAMESPACES
  value: {{ include "callvault.watchNamespaces" . | quote }}
- name: CALLVAULT_POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{/* The database URL, from the Secret named in values (the URL itself is never a value). */}}
{{- define "callvault.databaseEnv" -}}
- name: CALLVAULT_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret | quote }}
      key: {{ .Values.database.key | quote }}
{{- end }}
