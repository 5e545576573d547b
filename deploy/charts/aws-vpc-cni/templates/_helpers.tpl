{{/* vim: set filetype=mustache: */}}
{{/* The chart's name (upstream's nameOverride default keeps "aws-node"). */}}
{{- define "aws-vpc-cni.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The objects' name: "aws-node" by default, as upstream. */}}
{{- define "aws-vpc-cni.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "aws-vpc-cni.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aws-vpc-cni.labels" -}}
app.kubernetes.io/name: {{ include "aws-vpc-cni.name" . }}
helm.sh/chart: {{ include "aws-vpc-cni.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
k8s-app: aws-node
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "aws-vpc-cni.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
    {{ default (include "aws-vpc-cni.fullname" .) .Values.serviceAccount.name }}
{{- else -}}
    {{ default "default" .Values.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{/* The image: image.override (upstream's key) wins, else repository:tag. */}}
{{- define "aws-vpc-cni.image" -}}
{{- if .Values.image.override -}}
{{- .Values.image.override -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}
{{- end -}}

{{/* The init container runs the same image unless init.image.override says otherwise. */}}
{{- define "aws-vpc-cni.initImage" -}}
{{- if .Values.init.image.override -}}
{{- .Values.init.image.override -}}
{{- else -}}
{{- include "aws-vpc-cni.image" . -}}
{{- end -}}
{{- end -}}

{{/* True when ANNOTATE_POD_IP is set to true in env (pods patch is granted only then). */}}
{{- define "aws-vpc-cni.annotatePodIP" -}}
{{- if eq (lower (toString (default "false" .Values.env.ANNOTATE_POD_IP))) "true" -}}true{{- end -}}
{{- end -}}
