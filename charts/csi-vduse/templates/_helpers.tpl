{{/* Chart name, overridable. */}}
{{- define "csi-vduse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: the release, plus the chart name unless the release has it. */}}
{{- define "csi-vduse.fullname" -}}
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

{{- define "csi-vduse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "csi-vduse.labels" -}}
helm.sh/chart: {{ include "csi-vduse.chart" . }}
{{ include "csi-vduse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "csi-vduse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "csi-vduse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "csi-vduse.nodeName" -}}
{{ include "csi-vduse.fullname" . | trunc 58 | trimSuffix "-" }}-node
{{- end }}

{{- define "csi-vduse.controllerName" -}}
{{ include "csi-vduse.fullname" . | trunc 52 | trimSuffix "-" }}-controller
{{- end }}

{{/* The csi-vduse image reference. */}}
{{- define "csi-vduse.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* A sidecar image reference from its values: include "csi-vduse.sidecarImage" .Values.sidecars.X */}}
{{- define "csi-vduse.sidecarImage" -}}
{{ .image.repository }}:{{ .image.tag }}
{{- end }}

{{/* Host directory of the plugin's socket, and the socket path the kubelet dials. */}}
{{- define "csi-vduse.pluginDir" -}}
{{ trimSuffix "/" .Values.kubeletDir }}/plugins/{{ .Values.driverName }}
{{- end }}

{{/* Where the plugin and its sidecars see the socket inside their containers. */}}
{{- define "csi-vduse.socketDir" -}}/csi{{- end }}
{{- define "csi-vduse.socketPath" -}}/csi/csi.sock{{- end }}

{{/* Arguments common to both `csi-vduse serve` containers. */}}
{{- define "csi-vduse.serveArgs" -}}
- serve
- --endpoint=unix://{{ include "csi-vduse.socketPath" . }}
- --node-id=$(NODE_NAME)
- --driver-name={{ .Values.driverName }}
- --controller
- --log-level={{ .Values.logLevel }}
- --log-format={{ .Values.logFormat }}
{{- if .Values.volumeAttributesClasses.enabled }}
- --modify-routing
{{- end }}
{{- end }}

{{/* NODE_NAME from the downward API: the CSI node id and the sidecars' node. */}}
{{- define "csi-vduse.nodeNameEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- end }}
