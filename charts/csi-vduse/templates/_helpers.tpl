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

{{/* RBD volumes' objects: a driver of their own (rbd.driverName), its central controller
and its node plugins. */}}
{{- define "csi-vduse.rbdNodeName" -}}
{{ include "csi-vduse.fullname" . | trunc 54 | trimSuffix "-" }}-rbd-node
{{- end }}

{{- define "csi-vduse.rbdControllerName" -}}
{{ include "csi-vduse.fullname" . | trunc 48 | trimSuffix "-" }}-rbd-controller
{{- end }}

{{- define "csi-vduse.rbdPluginDir" -}}
{{ trimSuffix "/" .Values.kubeletDir }}/plugins/{{ .Values.rbd.driverName }}
{{- end }}

{{/* The ConfigMap holding the clusters file (config.json): ceph-csi's, or the chart's. */}}
{{- define "csi-vduse.rbdClustersConfigMap" -}}
{{- if .Values.rbd.clustersConfigMap }}
{{- .Values.rbd.clustersConfigMap }}
{{- else }}
{{- include "csi-vduse.fullname" . | trunc 50 | trimSuffix "-" }}-ceph-clusters
{{- end }}
{{- end }}

{{/* Where both RBD csi-vduse containers read the clusters file. */}}
{{- define "csi-vduse.rbdClustersDir" -}}/etc/csi-vduse/ceph{{- end }}
{{- define "csi-vduse.rbdOwnSecretDir" -}}/etc/csi-vduse/ceph-controller-secret{{- end }}

{{/* Arguments common to both RBD `csi-vduse serve` containers. */}}
{{- define "csi-vduse.rbdServeArgs" -}}
- serve
- --endpoint=unix://{{ include "csi-vduse.socketPath" . }}
- --node-id=$(NODE_NAME)
- --driver-name={{ .Values.rbd.driverName }}
- --ceph-clusters={{ include "csi-vduse.rbdClustersDir" . }}/config.json
- --log-level={{ .Values.logLevel }}
- --log-format={{ .Values.logFormat }}
{{- end }}

{{/* What both node plugins' pods share: where they run and how (host network, host PIDs). */}}
{{- define "csi-vduse.nodePodSettings" -}}
# The vdpa generic-netlink family only exists in the host network namespace.
hostNetwork: true
# Dataplanes must outlive this pod's containers (a crash, an upgrade): outside a PID
# namespace of the container's own and moved out of its cgroup, they are not killed
# with it, and the next plugin adopts them.
hostPID: true
dnsPolicy: ClusterFirstWithHostNet
priorityClassName: {{ .Values.node.priorityClassName }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.node.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.node.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.node.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A node plugin's csi-vduse container from its env on: include with
(dict "root" $ "healthPort" N "metricsPort" M); its own mounts follow. */}}
{{- define "csi-vduse.nodePluginContainer" -}}
{{- $root := .root -}}
env:
  {{- include "csi-vduse.nodeNameEnv" $root | nindent 2 }}
  - name: CSI_VDUSE_DATAPLANE_USER
    value: {{ $root.Values.node.dataplaneUser | quote }}
  - name: POD_IP
    valueFrom:
      fieldRef:
        fieldPath: status.podIP
# Creates VDUSE devices, attaches them over vdpa netlink, formats and mounts.
securityContext:
  privileged: true
  runAsUser: 0
  runAsGroup: 0
ports:
  - name: healthz
    containerPort: {{ .healthPort }}
    protocol: TCP
  {{- if $root.Values.metrics.enabled }}
  - name: metrics
    containerPort: {{ .metricsPort }}
    protocol: TCP
  {{- end }}
livenessProbe:
  httpGet:
    path: /healthz
    port: healthz
  initialDelaySeconds: 10
  periodSeconds: {{ $root.Values.node.livenessProbe.periodSeconds }}
  timeoutSeconds: {{ $root.Values.node.livenessProbe.timeoutSeconds }}
  failureThreshold: {{ $root.Values.node.livenessProbe.failureThreshold }}
{{- with $root.Values.node.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  - name: socket-dir
    mountPath: {{ include "csi-vduse.socketDir" $root }}
  # Staging and target paths live here; mounts made in the container must reach
  # the host and the pods.
  - name: kubelet-dir
    mountPath: {{ trimSuffix "/" $root.Values.kubeletDir }}
    mountPropagation: Bidirectional
  - name: dev
    mountPath: /dev
  - name: sys
    mountPath: /sys
  - name: lib-modules
    mountPath: /lib/modules
    readOnly: true
{{- end }}

{{/* node-driver-registrar and livenessprobe of a node plugin: include with
(dict "root" $ "pluginDir" DIR "healthPort" N). */}}
{{- define "csi-vduse.nodeSidecars" -}}
{{- $root := .root -}}
- name: node-driver-registrar
  image: {{ include "csi-vduse.sidecarImage" $root.Values.sidecars.nodeDriverRegistrar }}
  imagePullPolicy: {{ $root.Values.sidecars.nodeDriverRegistrar.image.pullPolicy }}
  args:
    - --v={{ $root.Values.sidecarLogLevel }}
    - --csi-address={{ include "csi-vduse.socketPath" $root }}
    - --kubelet-registration-path={{ .pluginDir }}/csi.sock
  {{- with $root.Values.sidecars.nodeDriverRegistrar.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: socket-dir
      mountPath: {{ include "csi-vduse.socketDir" $root }}
    - name: registration-dir
      mountPath: /registration
- name: liveness-probe
  image: {{ include "csi-vduse.sidecarImage" $root.Values.sidecars.livenessProbe }}
  imagePullPolicy: {{ $root.Values.sidecars.livenessProbe.image.pullPolicy }}
  args:
    - --v={{ $root.Values.sidecarLogLevel }}
    - --csi-address={{ include "csi-vduse.socketPath" $root }}
    - --health-port={{ .healthPort }}
    - --probe-timeout={{ $root.Values.node.livenessProbe.probeTimeout }}
  {{- with $root.Values.sidecars.livenessProbe.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: socket-dir
      mountPath: {{ include "csi-vduse.socketDir" $root }}
{{- end }}

{{/* The host paths both node plugins mount: include with (dict "root" $ "pluginDir" DIR). */}}
{{- define "csi-vduse.nodeHostVolumes" -}}
{{- $kubeletDir := trimSuffix "/" .root.Values.kubeletDir -}}
- name: socket-dir
  hostPath:
    path: {{ .pluginDir }}
    type: DirectoryOrCreate
- name: registration-dir
  hostPath:
    path: {{ $kubeletDir }}/plugins_registry
    type: Directory
- name: kubelet-dir
  hostPath:
    path: {{ $kubeletDir }}
    type: Directory
- name: dev
  hostPath:
    path: /dev
    type: Directory
- name: sys
  hostPath:
    path: /sys
    type: Directory
- name: lib-modules
  hostPath:
    path: /lib/modules
    type: Directory
{{- end }}

{{/* What both central controllers' pods share: where they run, unprivileged. */}}
{{- define "csi-vduse.controllerPodSettings" -}}
priorityClassName: {{ .Values.controller.priorityClassName }}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.controller.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.controller.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.controller.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* external-resizer of a central controller, leader-elected: include with
(dict "root" $ "modify" BOOL), modify passing ControllerModifyVolume the PV's name. */}}
{{- define "csi-vduse.resizerSidecar" -}}
{{- $root := .root -}}
- name: csi-resizer
  image: {{ include "csi-vduse.sidecarImage" $root.Values.sidecars.resizer }}
  imagePullPolicy: {{ $root.Values.sidecars.resizer.image.pullPolicy }}
  args:
    - --v={{ $root.Values.sidecarLogLevel }}
    - --csi-address={{ include "csi-vduse.socketPath" $root }}
    - --timeout={{ $root.Values.sidecars.resizer.timeout }}
    - --leader-election=true
    - --leader-election-namespace=$(NAMESPACE)
    # Online expansion: a volume in use by a pod may grow.
    - --handle-volume-inuse-error=false
    {{- if .modify }}
    # ControllerModifyVolume gets the PV's name, by which the driver finds the node.
    - --extra-modify-metadata
    - --feature-gates=VolumeAttributesClass=true
    {{- end }}
  env:
    - name: NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
  {{- with $root.Values.sidecars.resizer.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: socket-dir
      mountPath: {{ include "csi-vduse.socketDir" $root }}
{{- end }}
